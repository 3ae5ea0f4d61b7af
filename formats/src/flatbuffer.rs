//! Bounds-checked reading of FlatBuffers (ExecuTorch programs and TFLite models are
//! both FlatBuffers): tables through their vtables, vectors and strings, where every
//! offset is checked against the buffer before it is followed and no length is trusted.

use crate::error::FormatError;

/// Bounds-checked reads of FlatBuffer tables, vectors and strings.
pub(crate) struct FlatBuffer<'a> {
    /// The whole buffer.
    pub(crate) bytes: &'a [u8],
}

impl FlatBuffer<'_> {
    pub(crate) fn u16(&self, at: usize) -> Result<u16, FormatError> {
        self.bytes
            .get(at..at.saturating_add(2))
            .filter(|b| b.len() == 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| self.out_of_bounds(at))
    }

    pub(crate) fn u32(&self, at: usize) -> Result<u32, FormatError> {
        self.bytes
            .get(at..at.saturating_add(4))
            .filter(|b| b.len() == 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| self.out_of_bounds(at))
    }

    pub(crate) fn u64(&self, at: usize) -> Result<u64, FormatError> {
        let b = self
            .bytes
            .get(at..at.saturating_add(8))
            .filter(|b| b.len() == 8)
            .ok_or_else(|| self.out_of_bounds(at))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn out_of_bounds(&self, at: usize) -> FormatError {
        problem(
            at as u64,
            format!(
                "the program points at byte {at}, past its end ({} bytes): the file is damaged",
                self.bytes.len()
            ),
        )
    }

    /// Follows the unsigned offset stored at `at`.
    pub(crate) fn follow(&self, at: usize) -> Result<usize, FormatError> {
        let target = at
            .checked_add(self.u32(at)? as usize)
            .filter(|&t| t < self.bytes.len())
            .ok_or_else(|| self.out_of_bounds(at))?;
        Ok(target)
    }

    /// Checks the table at `at` (its vtable must lie inside the buffer).
    pub(crate) fn table(&self, at: usize) -> Result<usize, FormatError> {
        self.vtable(at)?;
        Ok(at)
    }

    pub(crate) fn vtable(&self, table: usize) -> Result<(usize, u16), FormatError> {
        let soffset = self.u32(table)? as i32 as i64;
        let vtable = (table as i64)
            .checked_sub(soffset)
            .filter(|&v| v >= 0)
            .ok_or_else(|| self.out_of_bounds(table))? as usize;
        let size = self.u16(vtable)?;
        if size < 4 || size % 2 != 0 {
            return Err(problem(
                vtable as u64,
                format!("a table's vtable has an impossible size ({size} bytes)"),
            ));
        }
        self.u16(vtable + size as usize - 2)?;
        Ok((vtable, size))
    }

    /// Where field `index` of `table` is stored, if present.
    pub(crate) fn field(&self, table: usize, index: usize) -> Result<Option<usize>, FormatError> {
        let (vtable, size) = self.vtable(table)?;
        let slot = 4 + 2 * index;
        if slot + 2 > size as usize {
            return Ok(None);
        }
        match self.u16(vtable + slot)? {
            0 => Ok(None),
            offset => {
                let at = table + offset as usize;
                self.u32(at)?;
                Ok(Some(at))
            }
        }
    }

    /// The vector whose offset is stored at `at`: its first element and length; every
    /// element (4 bytes or more) must fit.
    pub(crate) fn vector(&self, at: usize) -> Result<(usize, u32), FormatError> {
        let start = self.follow(at)?;
        let count = self.u32(start)?;
        let end = (count as usize)
            .checked_mul(4)
            .and_then(|n| n.checked_add(start + 4))
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                problem(
                    start as u64,
                    format!("a vector of {count} entries runs past the end of the program"),
                )
            })?;
        let _ = end;
        Ok((start + 4, count))
    }

    /// The byte vector whose offset is stored at `at`: its first byte and length (all
    /// of it inside the buffer).
    pub(crate) fn vector_bytes(&self, at: usize) -> Result<(usize, u32), FormatError> {
        let start = self.follow(at)?;
        let count = self.u32(start)?;
        let end = (start + 4).checked_add(count as usize);
        if end.is_none_or(|e| e > self.bytes.len()) {
            return Err(problem(
                start as u64,
                format!("a buffer of {count} bytes runs past the end of the file (truncated?)"),
            ));
        }
        Ok((start + 4, count))
    }

    /// The string whose offset is stored at `at`.
    pub(crate) fn string(&self, at: usize) -> Result<String, FormatError> {
        let start = self.follow(at)?;
        let len = self.u32(start)? as usize;
        let bytes = self
            .bytes
            .get(start + 4..(start + 4).saturating_add(len))
            .filter(|b| b.len() == len)
            .ok_or_else(|| {
                problem(
                    start as u64,
                    format!("a string of {len} bytes runs past the end of the program"),
                )
            })?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

fn problem(offset: u64, problem: impl Into<String>) -> FormatError {
    FormatError {
        offset,
        problem: problem.into(),
    }
}
