//! CPU kernels for the style networks and the facts about the CPU they dispatch on.

pub mod conv;
pub mod norm;
pub mod planar;
pub(crate) mod simd;

use std::sync::OnceLock;

/// Instruction sets the kernels use, detected once.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    pub avx512: bool,
    pub avx2_fma: bool,
}

pub fn features() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            Features {
                avx512: std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma"),
                avx2_fma: std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Features {
                avx512: false,
                avx2_fma: false,
            }
        }
    })
}
