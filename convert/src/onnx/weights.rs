//! Where the weights' bytes go: inline in `model.onnx`, or in `model.onnx_data` beside it.
//!
//! A protobuf message cannot exceed 2 GiB, so bigger models keep their weights in an
//! external file that each initializer points into (`location`, `offset`, `length`), as
//! ONNX's `save_as_external_data` and Optimum do. Each tensor is written as soon as it is
//! converted, so the external case never holds a second copy of the weights in memory.
//! Offsets are aligned to 4 KiB so ONNX Runtime can map tensors straight from the file;
//! tensors under 1 KiB (norms of small models, constants) stay inline.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::proto::TensorProto;
use crate::error::ConvertError;

/// The external data file's name, next to `model.onnx`.
pub const EXTERNAL_DATA_FILE: &str = "model.onnx_data";
/// Alignment of each tensor in the external file.
const ALIGN: u64 = 4096;
/// Tensors smaller than this stay inline even with external data.
const MIN_EXTERNAL_BYTES: usize = 1024;

/// Receives each initializer with inline data and returns what the graph should hold.
pub(crate) trait WeightSink {
    /// Stores `tensor`'s data; returns the initializer to put in the graph.
    fn store(&mut self, tensor: TensorProto) -> Result<TensorProto, ConvertError>;
}

/// Keeps the data inline.
pub(crate) struct Inline;

impl WeightSink for Inline {
    fn store(&mut self, tensor: TensorProto) -> Result<TensorProto, ConvertError> {
        Ok(tensor)
    }
}

/// Writes the data of large tensors to [`EXTERNAL_DATA_FILE`].
pub(crate) struct External {
    path: PathBuf,
    file: BufWriter<File>,
    offset: u64,
}

impl External {
    /// Creates the external data file in `dir`.
    pub(crate) fn create(dir: &Path) -> Result<Self, ConvertError> {
        let path = dir.join(EXTERNAL_DATA_FILE);
        let file = File::create(&path).map_err(|e| ConvertError::io(&path, e))?;
        Ok(External {
            path,
            file: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
        })
    }

    /// Flushes the file to disk.
    pub(crate) fn finish(self) -> Result<(), ConvertError> {
        let path = self.path;
        let file = self
            .file
            .into_inner()
            .map_err(|e| ConvertError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| ConvertError::io(&path, e))
    }
}

impl WeightSink for External {
    fn store(&mut self, mut tensor: TensorProto) -> Result<TensorProto, ConvertError> {
        let Some(data) = tensor.raw_data.take() else {
            return Ok(tensor);
        };
        if data.len() < MIN_EXTERNAL_BYTES {
            tensor.raw_data = Some(data);
            return Ok(tensor);
        }
        let padding = (ALIGN - self.offset % ALIGN) % ALIGN;
        let io = |e| ConvertError::io(&self.path, e);
        self.file
            .write_all(&vec![0u8; padding as usize])
            .map_err(io)?;
        self.offset += padding;
        self.file.write_all(&data).map_err(io)?;
        let length = data.len() as u64;
        tensor.set_external(EXTERNAL_DATA_FILE, self.offset, length);
        self.offset += length;
        Ok(tensor)
    }
}
