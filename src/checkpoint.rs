//! Files of a Hugging Face model directory, written atomically (a temporary file beside the
//! target, then a rename), so a crash never leaves a half-written checkpoint behind.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An f32 tensor by name, row-major.
#[derive(Clone, Debug)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Bytes that an unprivileged process may still write on the file system holding `dir`
/// (`None` where the system cannot say).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c_path` is NUL-terminated and `stat` is written by statvfs before it is read
        // (only when it returns 0).
        let stat = unsafe {
            if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
                return None;
            }
            stat.assume_init()
        };
        Some(stat.f_bavail as u64 * stat.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Writes `path` through a temporary file beside it (filled by `write`, synced) and a rename.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Flushes a directory's entries (a rename in it) to disk; best effort (not every file system
/// can open a directory for this).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Json { context: path.display().to_string(), source: e })?;
    write_atomic(path, |w| w.write_all(text.as_bytes()))
}

/// An int8 tensor by name, row-major (a quantized checkpoint's weights).
#[derive(Clone, Debug)]
pub struct Int8Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<i8>,
}

/// Writes f32 tensors as `model.safetensors` (names sorted, as safetensors stores them).
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    write_safetensors_with(path, tensors, &[])
}

/// f32 values as safetensors stores them, little-endian: the values' own bytes on a
/// little-endian CPU (copying them byte by byte was most of the time a model took to save).
fn f32_le_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: f32 has no padding bytes, every byte is a valid u8, and the slice covers
        // exactly the values' memory.
        Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
        })
    } else {
        Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// A tensor's name, shape, type and stored bytes.
type Encoded<'a> = (&'a str, &'a [usize], safetensors::tensor::Dtype, Cow<'a, [u8]>);

/// `write_safetensors` with int8 tensors beside the f32 ones.
pub fn write_safetensors_with(path: &Path, tensors: &[NamedTensor], int8: &[Int8Tensor]) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    // SAFETY: i8 and u8 have the same size and alignment, and every byte is a valid u8.
    let i8_bytes = |data: &[i8]| unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, data.len()) };
    let encoded: Vec<Encoded> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice(), Dtype::F32, f32_le_bytes(&t.data)))
        .chain(int8.iter().map(|t| (t.name.as_str(), t.shape.as_slice(), Dtype::I8, Cow::Borrowed(i8_bytes(&t.data)))))
        .collect();
    let views = encoded
        .iter()
        .map(|(name, shape, dtype, b)| {
            let view = TensorView::new(*dtype, shape.to_vec(), b)
                .map_err(|e| Error::invalid(path, format!("tensor {name}: {e}")))?;
            Ok((name.to_string(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    let serialized = safetensors::tensor::serialize(views, metadata)
        .map_err(|e| Error::invalid(path, format!("cannot serialize: {e}")))?;
    write_atomic(path, |w| w.write_all(&serialized))
}
