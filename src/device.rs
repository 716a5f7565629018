//! Where the model's tensors live: `--device cpu` (the fused kernels), `cuda` or `cuda:N`
//! (candle's CUDA backend, built with `--features cuda`; the model then runs its composed ops).

use candle_core::Device;

use crate::error::{Error, Result};

/// A device from its command-line name: `cpu`, `cuda`, `cuda:N`.
pub fn parse(spec: &str) -> Result<Device> {
    let (kind, ordinal) = match spec.split_once(':') {
        Some((kind, n)) => {
            let n = n
                .parse::<usize>()
                .map_err(|_| Error::Usage(format!("--device {spec}: {n:?} is not a device number")))?;
            (kind, Some(n))
        }
        None => (spec, None),
    };
    match (kind, ordinal) {
        ("cpu", None) => Ok(Device::Cpu),
        ("cuda", n) => new_cuda(n.unwrap_or(0)).map_err(|e| match e {
            CudaError::Candle(candle_core::Error::NotCompiledWithCudaSupport) => Error::Usage(format!(
                "--device {spec}: this xner was built without CUDA; build it with `cargo build --release --features cuda` (docs/GPU.md)"
            )),
            CudaError::Candle(e) => Error::Usage(format!("--device {spec}: {e}")),
            CudaError::Loading(msg) => Error::Usage(format!("--device {spec}: cannot start CUDA: {msg}")),
        }),
        _ => Err(Error::Usage(format!("--device {spec}: expected cpu, cuda or cuda:N"))),
    }
}

enum CudaError {
    Candle(candle_core::Error),
    /// cudarc panics when it cannot load a CUDA library (libcuda, libcublas, …): its message.
    Loading(String),
}

/// `Device::new_cuda`, with cudarc's panic on a missing library turned into an error (the
/// default panic message is silenced for the call; what it said is returned).
fn new_cuda(ordinal: usize) -> std::result::Result<Device, CudaError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    std::panic::set_hook(hook);
    match started {
        Ok(device) => device.map_err(CudaError::Candle),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a CUDA library could not be loaded".into());
            Err(CudaError::Loading(msg))
        }
    }
}

/// The name `parse` reads back.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_bad_ones_say_why() {
        assert!(parse("cpu").unwrap().is_cpu());
        assert_eq!(name(&parse("cpu").unwrap()), "cpu");
        for bad in ["gpu", "cpu:1", "cuda:x", ""] {
            let msg = parse(bad).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("--device {bad}:")), "{msg}");
        }
        #[cfg(not(feature = "cuda"))]
        assert!(parse("cuda").unwrap_err().to_string().contains("--features cuda"));
    }
}
