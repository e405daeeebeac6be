//! A small dense tensor for the quantized-graph executor: row-major, f32 or i32.
//!
//! Quantized values (int8 activations, int32 biases) are kept as i32 so that the
//! arithmetic of the integer convolution is exact; everything else is f32.

use super::ExecError;

#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ExecError> {
        check_len(&shape, data.len())?;
        Ok(Self {
            shape,
            data: Data::F32(data),
        })
    }

    pub fn i32(shape: Vec<usize>, data: Vec<i32>) -> Result<Self, ExecError> {
        check_len(&shape, data.len())?;
        Ok(Self {
            shape,
            data: Data::I32(data),
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn as_f32(&self) -> Result<&[f32], ExecError> {
        match &self.data {
            Data::F32(v) => Ok(v),
            Data::I32(_) => Err(ExecError::DType("expected an f32 tensor, got i32")),
        }
    }

    pub fn as_i32(&self) -> Result<&[i32], ExecError> {
        match &self.data {
            Data::I32(v) => Ok(v),
            Data::F32(_) => Err(ExecError::DType("expected an i32 tensor, got f32")),
        }
    }

    pub fn into_f32(self) -> Result<Vec<f32>, ExecError> {
        match self.data {
            Data::F32(v) => Ok(v),
            Data::I32(_) => Err(ExecError::DType("expected an f32 tensor, got i32")),
        }
    }

    /// A scalar (any tensor with one element) as f32.
    pub fn scalar_f32(&self) -> Result<f32, ExecError> {
        match (&self.data, self.numel()) {
            (Data::F32(v), 1) => Ok(v[0]),
            (Data::I32(v), 1) => Ok(v[0] as f32),
            _ => Err(ExecError::Shape(format!(
                "expected a scalar, got shape {:?}",
                self.shape
            ))),
        }
    }

    /// A scalar as i32 (zero points).
    pub fn scalar_i32(&self) -> Result<i32, ExecError> {
        match (&self.data, self.numel()) {
            (Data::I32(v), 1) => Ok(v[0]),
            _ => Err(ExecError::Shape(format!(
                "expected an integer scalar, got shape {:?}",
                self.shape
            ))),
        }
    }

    /// Same data, new shape (`0` copies a dimension, `-1` is inferred), as ONNX Reshape.
    pub fn reshape(self, spec: &[i64]) -> Result<Self, ExecError> {
        let n = self.numel();
        let mut shape = Vec::with_capacity(spec.len());
        let mut infer = None;
        for (i, &d) in spec.iter().enumerate() {
            match d {
                0 => shape.push(*self.shape.get(i).ok_or_else(|| {
                    ExecError::Shape(format!("reshape {spec:?}: no dimension {i} to copy"))
                })?),
                -1 if infer.is_none() => {
                    infer = Some(i);
                    shape.push(1);
                }
                d if d > 0 => shape.push(d as usize),
                _ => return Err(ExecError::Shape(format!("bad reshape target {spec:?}"))),
            }
        }
        if let Some(i) = infer {
            let known: usize = shape.iter().product();
            if known == 0 || !n.is_multiple_of(known) {
                return Err(ExecError::Shape(format!(
                    "cannot reshape {:?} to {spec:?}",
                    self.shape
                )));
            }
            shape[i] = n / known;
        }
        check_len(&shape, n)?;
        Ok(Self {
            shape,
            data: self.data,
        })
    }

    /// Permutes the axes (ONNX Transpose).
    pub fn transpose(&self, perm: &[usize]) -> Result<Self, ExecError> {
        let rank = self.shape.len();
        if perm.len() != rank || (0..rank).any(|a| !perm.contains(&a)) {
            return Err(ExecError::Shape(format!(
                "bad permutation {perm:?} for rank {rank}"
            )));
        }
        let in_strides = strides(&self.shape);
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let src_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let gather = |n: usize| -> Vec<usize> {
            let mut idx = vec![0usize; rank];
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(idx.iter().zip(&src_strides).map(|(i, s)| i * s).sum());
                for a in (0..rank).rev() {
                    idx[a] += 1;
                    if idx[a] < out_shape[a] {
                        break;
                    }
                    idx[a] = 0;
                }
            }
            out
        };
        let order = gather(self.numel());
        let data = match &self.data {
            Data::F32(v) => Data::F32(order.iter().map(|&i| v[i]).collect()),
            Data::I32(v) => Data::I32(order.iter().map(|&i| v[i]).collect()),
        };
        Ok(Self {
            shape: out_shape,
            data,
        })
    }
}

pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn check_len(shape: &[usize], len: usize) -> Result<(), ExecError> {
    let n: usize = shape.iter().product();
    if n != len {
        return Err(ExecError::Shape(format!(
            "shape {shape:?} holds {n} values, data has {len}"
        )));
    }
    Ok(())
}

/// Numpy-style broadcast of two f32 tensors through `f` (ONNX Add/Sub/Mul).
pub fn broadcast_f32(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32,
) -> Result<Tensor, ExecError> {
    let (av, bv) = (a.as_f32()?, b.as_f32()?);
    if a.shape == b.shape {
        let data = av.iter().zip(bv).map(|(&x, &y)| f(x, y)).collect();
        return Tensor::f32(a.shape.clone(), data);
    }
    let rank = a.shape.len().max(b.shape.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let mut out_shape = Vec::with_capacity(rank);
    for (&x, &y) in sa.iter().zip(&sb) {
        out_shape.push(match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(ExecError::Shape(format!(
                    "cannot broadcast {:?} with {:?}",
                    a.shape, b.shape
                )));
            }
        });
    }
    let (ta, tb) = (strides(&sa), strides(&sb));
    let eff = |s: &[usize], t: &[usize]| -> Vec<usize> {
        s.iter()
            .zip(t)
            .map(|(&d, &st)| if d == 1 { 0 } else { st })
            .collect()
    };
    let (ea, eb) = (eff(&sa, &ta), eff(&sb, &tb));
    // The innermost axes where both operands advance contiguously (or one stays
    // put) form runs that are done in one tight loop.
    let mut run = 1usize;
    let mut split = rank;
    let (mut ka, mut kb) = (None::<bool>, None::<bool>);
    while split > 0 {
        let d = split - 1;
        let a_moves = ea[d] != 0;
        let b_moves = eb[d] != 0;
        let a_ok = !a_moves || ea[d] == run;
        let b_ok = !b_moves || eb[d] == run;
        if !(a_ok && b_ok) || ka.is_some_and(|k| k != a_moves) || kb.is_some_and(|k| k != b_moves) {
            break;
        }
        ka = Some(a_moves);
        kb = Some(b_moves);
        run *= out_shape[d];
        split = d;
    }
    let (step_a, step_b) = (
        usize::from(ka.unwrap_or(true)),
        usize::from(kb.unwrap_or(true)),
    );
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; split];
    let (mut ia, mut ib) = (0usize, 0usize);
    for _ in 0..n / run.max(1) {
        match (step_a, step_b) {
            (1, 1) => out.extend(
                av[ia..ia + run]
                    .iter()
                    .zip(&bv[ib..ib + run])
                    .map(|(&x, &y)| f(x, y)),
            ),
            (1, 0) => {
                let y = bv[ib];
                out.extend(av[ia..ia + run].iter().map(|&x| f(x, y)));
            }
            (0, 1) => {
                let x = av[ia];
                out.extend(bv[ib..ib + run].iter().map(|&y| f(x, y)));
            }
            _ => out.extend(std::iter::repeat_n(f(av[ia], bv[ib]), run)),
        }
        for d in (0..split).rev() {
            idx[d] += 1;
            ia += ea[d];
            ib += eb[d];
            if idx[d] < out_shape[d] {
                break;
            }
            ia -= ea[d] * idx[d];
            ib -= eb[d] * idx[d];
            idx[d] = 0;
        }
    }
    Tensor::f32(out_shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_nhwc_to_nchw() {
        // 1x2x2x3 (NHWC) with values 0..12
        let t = Tensor::f32(vec![1, 2, 2, 3], (0..12).map(|v| v as f32).collect()).unwrap();
        let n = t.transpose(&[0, 3, 1, 2]).unwrap();
        assert_eq!(n.shape, vec![1, 3, 2, 2]);
        assert_eq!(
            n.as_f32().unwrap(),
            &[0., 3., 6., 9., 1., 4., 7., 10., 2., 5., 8., 11.]
        );
    }

    #[test]
    fn broadcast_channel_vector() {
        let a = Tensor::f32(vec![1, 2, 1, 2], vec![1., 2., 3., 4.]).unwrap();
        let b = Tensor::f32(vec![1, 2, 1, 1], vec![10., 20.]).unwrap();
        let c = broadcast_f32(&a, &b, |x, y| x + y).unwrap();
        assert_eq!(c.as_f32().unwrap(), &[11., 12., 23., 24.]);
        let d = broadcast_f32(&b, &a, |x, y| x - y).unwrap();
        assert_eq!(d.as_f32().unwrap(), &[9., 8., 17., 16.]);
        let bad = Tensor::f32(vec![3], vec![0.; 3]).unwrap();
        assert!(broadcast_f32(&a, &bad, |x, _| x).is_err());
    }

    #[test]
    fn reshape_copies_and_infers() {
        let t = Tensor::i32(vec![1, 4, 1, 1], vec![1, 2, 3, 4]).unwrap();
        let r = t.reshape(&[0, -1]).unwrap();
        assert_eq!(r.shape, vec![1, 4]);
        assert!(r.reshape(&[3, -1]).is_err());
    }
}
