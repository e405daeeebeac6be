//! The few vector operations the kernels need, for AVX-512, AVX2 and plain Rust.
//!
//! Kernels are generic over [`Simd`] and marked `#[inline(always)]`; a wrapper
//! with `#[target_feature]` instantiates them, so the intrinsics inline into code
//! compiled for the instruction set that was detected at run time. (Written with
//! intrinsics because the autovectoriser kept the accumulators on the stack.)

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// f32 vectors.
///
/// # Safety
/// Callers run inside code compiled for the implementation's instruction set,
/// and pointers are valid for `LANES` elements.
pub unsafe trait Simd: Copy {
    const LANES: usize;
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c` with one rounding.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
}

/// i32 vectors (exact integer convolutions).
///
/// # Safety
/// As [`Simd`].
pub unsafe trait SimdI32: Copy {
    const LANES: usize;
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: i32) -> Self::V;
    unsafe fn load(p: *const i32) -> Self::V;
    unsafe fn store(p: *mut i32, v: Self::V);
    /// `a * b + c` (wrapping).
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx512;

#[cfg(target_arch = "x86_64")]
// SAFETY: every method is one AVX-512F intrinsic; the trait's contract
// has callers run on CPUs with it and pass pointers valid for LANES elements.
unsafe impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: `p` is valid for LANES reads (the trait's contract); the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: `p` is valid for LANES writes (the trait's contract); the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_add_ps(a, b) }
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY: every method is one AVX-512F intrinsic; the trait's contract
// has callers run on CPUs with it and pass pointers valid for LANES elements.
unsafe impl SimdI32 for Avx512 {
    const LANES: usize = 16;
    type V = __m512i;
    #[inline(always)]
    unsafe fn zero() -> __m512i {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn splat(x: i32) -> __m512i {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_set1_epi32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const i32) -> __m512i {
        // SAFETY: `p` is valid for LANES reads (the trait's contract); the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, v: __m512i) {
        // SAFETY: `p` is valid for LANES writes (the trait's contract); the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_storeu_si512(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_add_epi32(_mm512_mullo_epi32(a, b), c) }
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx2;

#[cfg(target_arch = "x86_64")]
// SAFETY: every method is one AVX2 and FMA intrinsic; the trait's contract
// has callers run on CPUs with it and pass pointers valid for LANES elements.
unsafe impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: `p` is valid for LANES reads (the trait's contract); the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: `p` is valid for LANES writes (the trait's contract); the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_add_ps(a, b) }
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY: every method is one AVX2 and FMA intrinsic; the trait's contract
// has callers run on CPUs with it and pass pointers valid for LANES elements.
unsafe impl SimdI32 for Avx2 {
    const LANES: usize = 8;
    type V = __m256i;
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn splat(x: i32) -> __m256i {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_set1_epi32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const i32) -> __m256i {
        // SAFETY: `p` is valid for LANES reads (the trait's contract); the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, v: __m256i) {
        // SAFETY: `p` is valid for LANES writes (the trait's contract); the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_storeu_si256(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
        // SAFETY: register-only intrinsic; the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_add_epi32(_mm256_mullo_epi32(a, b), c) }
    }
}

/// Portable fallback: 8 lanes of plain Rust (correct everywhere, not fast).
#[derive(Clone, Copy)]
pub struct Portable;

// SAFETY: plain Rust on any CPU; the pointer methods read or write
// exactly LANES elements, which the trait's contract makes valid.
unsafe impl Simd for Portable {
    const LANES: usize = 8;
    type V = [f32; 8];
    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        // SAFETY: `p` is valid for LANES reads (the trait's contract); unaligned access is allowed.
        unsafe { std::ptr::read_unaligned(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        // SAFETY: `p` is valid for LANES writes (the trait's contract); unaligned access is allowed.
        unsafe { std::ptr::write_unaligned(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i].mul_add(b[i], c[i]))
    }
    #[inline(always)]
    unsafe fn add(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] + b[i])
    }
}

// SAFETY: plain Rust on any CPU; the pointer methods read or write
// exactly LANES elements, which the trait's contract makes valid.
unsafe impl SimdI32 for Portable {
    const LANES: usize = 8;
    type V = [i32; 8];
    #[inline(always)]
    unsafe fn zero() -> [i32; 8] {
        [0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: i32) -> [i32; 8] {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const i32) -> [i32; 8] {
        // SAFETY: `p` is valid for LANES reads (the trait's contract); unaligned access is allowed.
        unsafe { std::ptr::read_unaligned(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, v: [i32; 8]) {
        // SAFETY: `p` is valid for LANES writes (the trait's contract); unaligned access is allowed.
        unsafe { std::ptr::write_unaligned(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: [i32; 8], b: [i32; 8], c: [i32; 8]) -> [i32; 8] {
        std::array::from_fn(|i| a[i].wrapping_mul(b[i]).wrapping_add(c[i]))
    }
}

/// The instruction set the kernels will use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    pub fn detect() -> Self {
        let f = super::features();
        if f.avx512 {
            Isa::Avx512
        } else if f.avx2_fma {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}
