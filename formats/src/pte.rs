//! ExecuTorch programs (`.pte`): a FlatBuffer with the file identifier `ET12` at byte 4,
//! usually followed (at byte 8) by ExecuTorch's extended header `eh00`, which gives the
//! size of the FlatBuffer and where the data segments after it start and end.
//!
//! The check reads the extended header (so a truncated file is caught: the segments
//! must end inside the file), then walks the FlatBuffer far enough to list the methods
//! (`execution_plan[*].name`) and count the data segments. Every offset is checked
//! against the FlatBuffer's bounds before it is followed; nothing else of the program is
//! interpreted (the runtime verifies the whole FlatBuffer when it loads it).

use std::io::Read;

use crate::error::FormatError;
use crate::facts::Facts;
use crate::flatbuffer::FlatBuffer;

/// The FlatBuffer file identifier of ExecuTorch programs (schema version 12).
pub const FILE_IDENTIFIER: &[u8; 4] = b"ET12";
/// The magic of the extended header.
const EXTENDED_MAGIC: &[u8; 4] = b"eh00";
/// Bytes of the extended header that this check reads (magic, length, program size,
/// segment base offset; segment data size when the header is long enough).
const EXTENDED_MIN_LEN: u32 = 24;
/// Methods listed at most (a real program has a handful).
const MAX_METHODS: u32 = 4096;

/// Whether `head` starts like an ExecuTorch program.
pub fn sniff(head: &[u8]) -> bool {
    head.get(4..8) == Some(FILE_IDENTIFIER.as_slice())
}

/// What the check read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The names of the program's methods, in file order.
    pub methods: Vec<String>,
    /// Bytes of the FlatBuffer (the whole file when there is no extended header).
    pub program_size: u64,
    /// Bytes of data segments after it (weights, delegate blobs).
    pub segment_bytes: u64,
}

/// FlatBuffers larger than this are not walked (weights stored inline rather than in
/// segments): only the headers are checked.
const MAX_WALKED_PROGRAM: u64 = 256 << 20;

/// Checks the program of `len` bytes read from `reader` and records what it found in
/// `facts`.
pub fn check(mut reader: impl Read, len: u64, facts: &mut Facts) -> Result<Summary, FormatError> {
    let mut head = [0u8; 40];
    let n = read_up_to(&mut reader, &mut head)?;
    let head = &head[..n];
    if head.len() < 8 {
        return Err(problem(
            0,
            format!("only {len} bytes: too short for an ExecuTorch program (truncated?)"),
        ));
    }
    if !sniff(head) {
        return Err(problem(
            0,
            "not an ExecuTorch program (the file identifier ET12 is not at byte 4)",
        ));
    }
    let (program_size, segment_bytes) = extended_header(head, len)?;
    facts.detail("pte.segment_bytes", segment_bytes);
    if program_size > MAX_WALKED_PROGRAM {
        facts.detail("pte.program_bytes", program_size);
        return Ok(Summary {
            methods: Vec::new(),
            program_size,
            segment_bytes,
        });
    }
    // The program may be shorter than the head read so far (a file without an extended
    // header, or one whose header says so): keep only its bytes.
    let mut bytes = head[..head.len().min(program_size as usize)].to_vec();
    let have = bytes.len();
    bytes.resize(program_size as usize, 0);
    let got = read_up_to(&mut reader, &mut bytes[have..])?;
    if have + got < program_size as usize {
        return Err(problem(
            (have + got) as u64,
            "the file ends inside the program (truncated)",
        ));
    }
    check_program(&bytes, program_size, segment_bytes, facts)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, FormatError> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(problem(n as u64, format!("cannot read: {e}"))),
        }
    }
    Ok(n)
}

/// Walks the FlatBuffer `bytes` (the program, `program_size` bytes).
fn check_program(
    bytes: &[u8],
    program_size: u64,
    segment_bytes: u64,
    facts: &mut Facts,
) -> Result<Summary, FormatError> {
    let fb = FlatBuffer { bytes };
    let root = fb.u32(0)? as usize;
    let root = fb.table(root)?;
    let version = match fb.field(root, 0)? {
        Some(at) => fb.u32(at)?,
        None => 0,
    };
    let mut methods = Vec::new();
    if let Some(at) = fb.field(root, 1)? {
        let (start, count) = fb.vector(at)?;
        if count > MAX_METHODS {
            return Err(problem(
                at as u64,
                format!("the program claims {count} methods (at most {MAX_METHODS} are expected)"),
            ));
        }
        for i in 0..count as usize {
            let element = start + 4 * i;
            let plan = fb.table(fb.follow(element)?)?;
            let name = match fb.field(plan, 0)? {
                Some(at) => fb.string(at)?,
                None => String::new(),
            };
            methods.push(name);
        }
    }
    if methods.is_empty() {
        return Err(problem(root as u64, "the program has no methods"));
    }
    let segments = match fb.field(root, 4)? {
        Some(at) => fb.vector(at)?.1,
        None => 0,
    };
    facts.detail("pte.methods", methods.join(","));
    facts.detail("pte.schema_version", version);
    facts.detail("pte.segments", segments);
    if methods.iter().any(|m| m == "forward") && methods.iter().any(|m| m == "get_vocab_size") {
        facts
            .architecture
            .get_or_insert_with(|| "llama".to_string());
    }
    Ok(Summary {
        methods,
        program_size,
        segment_bytes,
    })
}

/// The FlatBuffer's size and the segment bytes after it, from the extended header (the
/// whole file and none when there is no header).
fn extended_header(bytes: &[u8], len: u64) -> Result<(u64, u64), FormatError> {
    if bytes.get(8..12) != Some(EXTENDED_MAGIC.as_slice()) {
        return Ok((len, 0));
    }
    let u32_at = |o: usize| -> Result<u32, FormatError> {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| {
                problem(
                    o as u64,
                    "the file ends inside the extended header (truncated)",
                )
            })
    };
    let u64_at = |o: usize| -> Result<u64, FormatError> {
        let b = bytes.get(o..o + 8).ok_or_else(|| {
            problem(
                o as u64,
                "the file ends inside the extended header (truncated)",
            )
        })?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    };
    let header_len = u32_at(12)?;
    if header_len < EXTENDED_MIN_LEN {
        return Err(problem(
            12,
            format!(
                "the extended header says it is {header_len} bytes, fewer than {EXTENDED_MIN_LEN}"
            ),
        ));
    }
    let program_size = u64_at(16)?;
    let segment_base = u64_at(24)?;
    if program_size < 8 + u64::from(header_len) || program_size > len {
        return Err(problem(
            16,
            format!(
                "the extended header gives a program of {program_size} bytes, but the file has \
                 {len} (truncated?)"
            ),
        ));
    }
    let segment_bytes = if header_len >= 32 {
        u64_at(32)?
    } else if segment_base == 0 {
        // Older 24-byte headers: a base of 0 means "no segments".
        0
    } else {
        len.saturating_sub(segment_base)
    };
    if segment_bytes > 0 {
        let end = segment_base.checked_add(segment_bytes);
        if segment_base < program_size || end.is_none_or(|e| e > len) {
            return Err(problem(
                24,
                format!(
                    "the data segments span bytes {segment_base}..{} but the file has {len} \
                     (truncated?)",
                    end.map_or_else(|| "overflow".to_string(), |e| e.to_string())
                ),
            ));
        }
    }
    Ok((program_size, segment_bytes))
}

fn problem(offset: u64, problem: impl Into<String>) -> FormatError {
    FormatError {
        offset,
        problem: problem.into(),
    }
}

/// Builders of small programs for tests (here and in other crates).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    /// A minimal program: the `ET12` FlatBuffer with one execution plan per name (each a
    /// table holding only its name), an extended header, and `segment` bytes of data
    /// after it.
    pub fn program(methods: &[&str], segment: usize) -> Vec<u8> {
        // Layout: [root offset u32][ET12][eh00 header: 40 bytes]
        //         [root vtable][root table][plans vector][plan vtable + tables][strings]
        let mut b = vec![0u8; 8];
        b[4..8].copy_from_slice(b"ET12");
        let header_at = b.len();
        b.extend_from_slice(b"eh00");
        b.extend_from_slice(&32u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 24]); // program size, segment base, segment size
        b.extend_from_slice(&[0u8; 4]); // padding to keep 4-byte alignment
                                        // Root vtable: size 8, table size 12, field 0 absent, field 1 at +4.
        let root_vtable = b.len();
        for v in [10u16, 12, 0, 4, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0u8; 2]);
        let root = b.len();
        b.extend_from_slice(&((root - root_vtable) as i32).to_le_bytes());
        let plans_slot = b.len();
        b.extend_from_slice(&[0u8; 4]);
        b.extend_from_slice(&[0u8; 4]);
        let vector = b.len();
        let put =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut b, plans_slot, (vector - plans_slot) as u32);
        b.extend_from_slice(&(methods.len() as u32).to_le_bytes());
        let slots: Vec<usize> = methods
            .iter()
            .map(|_| {
                let at = b.len();
                b.extend_from_slice(&[0u8; 4]);
                at
            })
            .collect();
        let plan_vtable = b.len();
        for v in [6u16, 8, 4] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0u8; 2]);
        for (name, slot) in methods.iter().zip(slots) {
            let table = b.len();
            put(&mut b, slot, (table - slot) as u32);
            b.extend_from_slice(&((table - plan_vtable) as i32).to_le_bytes());
            let name_slot = b.len();
            b.extend_from_slice(&[0u8; 4]);
            let string = b.len();
            put(&mut b, name_slot, (string - name_slot) as u32);
            b.extend_from_slice(&(name.len() as u32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            while b.len() % 4 != 0 {
                b.push(0);
            }
        }
        put(&mut b, 0, root as u32);
        let program_size = b.len() as u64;
        let base = program_size.next_multiple_of(16);
        b.resize(base as usize, 0);
        b.extend((0..segment).map(|i| i as u8));
        b[header_at + 8..header_at + 16].copy_from_slice(&program_size.to_le_bytes());
        b[header_at + 16..header_at + 24].copy_from_slice(&base.to_le_bytes());
        b[header_at + 24..header_at + 32].copy_from_slice(&(segment as u64).to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_listed_and_damage_is_found() {
        let p = testing::program(&["forward", "get_vocab_size", "get_max_seq_len"], 64);
        let mut facts = Facts::default();
        let check = |b: &[u8], f: &mut Facts| check(b, b.len() as u64, f);
        let s = check(&p, &mut facts).unwrap();
        assert_eq!(s.methods, ["forward", "get_vocab_size", "get_max_seq_len"]);
        assert_eq!(s.segment_bytes, 64);
        assert_eq!(
            facts.details["pte.methods"],
            "forward,get_vocab_size,get_max_seq_len"
        );
        assert_eq!(facts.architecture.as_deref(), Some("llama"));

        // Cut inside the segments: the extended header no longer fits the file.
        let err = check(&p[..p.len() - 1], &mut Facts::default()).unwrap_err();
        assert_eq!(err.offset, 24);
        assert!(err.problem.contains("truncated"), "{err}");

        // A header whose program size is shorter than the bytes already read (a panic
        // once): an error, not a slice out of range.
        let mut short = p.clone();
        short[16..24].copy_from_slice(&30u64.to_le_bytes());
        assert!(check(&short, &mut Facts::default()).is_err());
        short[16..24].copy_from_slice(&20u64.to_le_bytes());
        assert!(check(&short, &mut Facts::default()).is_err());

        // A method name that runs off the end.
        let mut bad = p.clone();
        let at = bad.windows(7).position(|w| w == b"forward").unwrap() - 4;
        bad[at..at + 4].copy_from_slice(&10_000u32.to_le_bytes());
        let err = check(&bad, &mut Facts::default()).unwrap_err();
        assert!(err.problem.contains("string of 10000 bytes"), "{err}");

        assert!(check(b"not a program at all", &mut Facts::default()).is_err());
    }
}
