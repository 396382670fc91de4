//! Synthetic PV kernel images and a `Vec`-backed domain memory for the tests.

use std::collections::BTreeMap;
use std::string::String;
use std::vec;
use std::vec::Vec;

use hypercall_abi::elfnote::XenElfNote;
use hypercall_abi::{Mfn, PAGE_SIZE, Pfn};

use crate::build::{DomainMemory, MemError};
use crate::elf::{EM_X86_64, ET_EXEC, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE, SHT_NOTE};

/// One `PT_LOAD`.
#[derive(Clone, Copy, Debug)]
pub struct Seg {
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// The byte at offset `i` of segment `k`'s file bytes (never 0).
pub fn seg_byte(k: usize, i: u64) -> u8 {
    let v = (k as u64 * 31 + i * 7 + (i >> 9)) % 251;
    u8::try_from(v).unwrap() + 1
}

/// An image under construction.
#[derive(Clone, Debug)]
pub struct Spec {
    pub segs: Vec<Seg>,
    pub notes: Vec<(u32, Vec<u8>)>,
    pub entry: u64,
    /// Extra section: a legacy `__xen_guest` section (no notes then).
    pub xen_guest_section: bool,
    /// Put the notes in an `SHT_NOTE` section instead of a `PT_NOTE` segment.
    pub notes_in_section: bool,
}

pub fn str_note(t: XenElfNote, s: &str) -> (u32, Vec<u8>) {
    let mut d = s.as_bytes().to_vec();
    d.push(0);
    (t as u32, d)
}

pub fn num_note(t: XenElfNote, v: u64) -> (u32, Vec<u8>) {
    (t as u32, v.to_le_bytes().to_vec())
}

/// The notes of the digest's "typical small PV64 test image", with hypercall page
/// `hcall`.
pub fn std_notes(hcall: u64) -> Vec<(u32, Vec<u8>)> {
    vec![
        str_note(XenElfNote::GuestOs, "xtest"),
        str_note(XenElfNote::GuestVersion, "0"),
        str_note(XenElfNote::Loader, "generic"),
        num_note(XenElfNote::HypercallPage, hcall),
        str_note(XenElfNote::XenVersion, "xen-3.0"),
        str_note(
            XenElfNote::Features,
            "!writable_page_tables|pae_pgdir_above_4gb",
        ),
        str_note(XenElfNote::PaeMode, "yes"),
    ]
}

impl Spec {
    /// The digest's small test kernel: one PT_LOAD at VA = PA 0x100000, memsz 0x11000
    /// (0x9000 bytes in the file), entry 0x100000, hypercall page 0x106000.
    pub fn small() -> Spec {
        Spec {
            segs: vec![Seg {
                vaddr: 0x10_0000,
                paddr: 0x10_0000,
                filesz: 0x9000,
                memsz: 0x11000,
            }],
            notes: std_notes(0x10_6000),
            entry: 0x10_0000,
            xen_guest_section: false,
            notes_in_section: false,
        }
    }

    /// A kernel linked at `VIRT_BASE` 0xffffffff80000000, loaded at PA 0x200000.
    pub fn high() -> Spec {
        let vb = 0xffff_ffff_8000_0000;
        let mut notes = std_notes(vb + 0x20_1000);
        notes.push(num_note(XenElfNote::VirtBase, vb));
        Spec {
            segs: vec![Seg {
                vaddr: vb + 0x20_0000,
                paddr: 0x20_0000,
                filesz: 0x3_0000,
                memsz: 0x8_0000,
            }],
            notes,
            entry: vb + 0x20_0000,
            xen_guest_section: false,
            notes_in_section: false,
        }
    }

    pub fn with_note(mut self, note: (u32, Vec<u8>)) -> Spec {
        self.notes.retain(|(t, _)| *t != note.0);
        self.notes.push(note);
        self
    }

    pub fn without_note(mut self, t: XenElfNote) -> Spec {
        self.notes.retain(|(n, _)| *n != t as u32);
        self
    }

    /// ELF header, program headers (loads, then the note segment), notes, segment
    /// bytes (page-aligned offsets), section headers if any.
    pub fn build(&self) -> Vec<u8> {
        let mut blob = Vec::new();
        for (t, desc) in &self.notes {
            blob.extend_from_slice(&4u32.to_le_bytes());
            blob.extend_from_slice(&u32::try_from(desc.len()).unwrap().to_le_bytes());
            blob.extend_from_slice(&t.to_le_bytes());
            blob.extend_from_slice(b"Xen\0");
            blob.extend_from_slice(desc);
            while blob.len() % 4 != 0 {
                blob.push(0);
            }
        }
        let note_seg = !self.notes_in_section && !self.notes.is_empty();
        let nph = self.segs.len() + usize::from(note_seg);
        let note_off = 64 + 56 * nph;
        let mut b = vec![0u8; note_off];
        b.extend_from_slice(&blob);
        let mut offs = Vec::new();
        for (k, s) in self.segs.iter().enumerate() {
            while b.len() % PAGE_SIZE != 0 {
                b.push(0);
            }
            offs.push(b.len());
            b.extend((0..s.filesz).map(|i| seg_byte(k, i)));
        }
        // Sections: null, .shstrtab, then notes and/or __xen_guest.
        let want_sections = self.xen_guest_section || self.notes_in_section;
        let mut shoff = 0;
        let mut shnum = 0u16;
        if want_sections {
            let strtab_off = b.len();
            let names = b"\0.shstrtab\0__xen_guest\0.note.Xen\0";
            b.extend_from_slice(names);
            let guest_off = b.len();
            let guest = b"GUEST_OS=linux,XEN_VER=xen-3.0\0";
            b.extend_from_slice(guest);
            while b.len() % 8 != 0 {
                b.push(0);
            }
            shoff = b.len();
            let mut sh = |name: u32, ty: u32, off: usize, size: usize| {
                let mut h = [0u8; 64];
                h[0..4].copy_from_slice(&name.to_le_bytes());
                h[4..8].copy_from_slice(&ty.to_le_bytes());
                h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
                h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
                b.extend_from_slice(&h);
                shnum += 1;
            };
            sh(0, 0, 0, 0);
            sh(1, 3, strtab_off, names.len());
            if self.xen_guest_section {
                sh(11, 1, guest_off, guest.len());
            }
            if self.notes_in_section {
                sh(23, SHT_NOTE, note_off, blob.len());
            }
        }
        let put = |b: &mut Vec<u8>, off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(&mut b, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        put(&mut b, 16, &ET_EXEC.to_le_bytes());
        put(&mut b, 18, &EM_X86_64.to_le_bytes());
        put(&mut b, 20, &1u32.to_le_bytes());
        put(&mut b, 24, &self.entry.to_le_bytes());
        put(&mut b, 32, &64u64.to_le_bytes());
        put(&mut b, 40, &(shoff as u64).to_le_bytes());
        put(&mut b, 52, &64u16.to_le_bytes());
        put(&mut b, 54, &56u16.to_le_bytes());
        put(&mut b, 56, &u16::try_from(nph).unwrap().to_le_bytes());
        put(&mut b, 58, &64u16.to_le_bytes());
        put(&mut b, 60, &shnum.to_le_bytes());
        put(
            &mut b,
            62,
            &(if want_sections { 1u16 } else { 0 }).to_le_bytes(),
        );
        for (i, s) in self.segs.iter().enumerate() {
            let ph = 64 + 56 * i;
            put(&mut b, ph, &PT_LOAD.to_le_bytes());
            put(&mut b, ph + 4, &(PF_R | PF_W | PF_X).to_le_bytes());
            put(&mut b, ph + 8, &(offs[i] as u64).to_le_bytes());
            put(&mut b, ph + 16, &s.vaddr.to_le_bytes());
            put(&mut b, ph + 24, &s.paddr.to_le_bytes());
            put(&mut b, ph + 32, &s.filesz.to_le_bytes());
            put(&mut b, ph + 40, &s.memsz.to_le_bytes());
            put(&mut b, ph + 48, &0x1000u64.to_le_bytes());
        }
        if note_seg {
            let ph = 64 + 56 * self.segs.len();
            put(&mut b, ph, &PT_NOTE.to_le_bytes());
            put(&mut b, ph + 4, &PF_R.to_le_bytes());
            put(&mut b, ph + 8, &(note_off as u64).to_le_bytes());
            put(&mut b, ph + 32, &(blob.len() as u64).to_le_bytes());
            put(&mut b, ph + 40, &(blob.len() as u64).to_le_bytes());
            put(&mut b, ph + 48, &4u64.to_le_bytes());
        }
        b
    }
}

/// Poison of frames nobody wrote.
pub const POISON: u8 = 0xA5;
/// Machine frames start here.
pub const MFN_BASE: u64 = 0x8_0000;

/// Domain memory over a `Vec`, with a deterministic pseudo-random PFN -> MFN
/// permutation. Frames start poisoned so missing zeroing shows.
pub struct VecMem {
    pub frames: Vec<Vec<u8>>,
    pub mfns: Vec<Option<u64>>,
    pub by_mfn: BTreeMap<u64, usize>,
    /// Fail writes to this frame.
    pub fail_on: Option<u64>,
}

impl VecMem {
    pub fn new(nr_pages: u64, seed: u64) -> VecMem {
        let n = usize::try_from(nr_pages).unwrap();
        let mut perm: Vec<u64> = (0..nr_pages).collect();
        let mut x = seed | 1;
        for i in (1..n).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let j = usize::try_from(x % (i as u64 + 1)).unwrap();
            perm.swap(i, j);
        }
        let mfns: Vec<Option<u64>> = perm.iter().map(|p| Some(MFN_BASE + p)).collect();
        let by_mfn = mfns
            .iter()
            .enumerate()
            .map(|(i, m)| (m.unwrap(), i))
            .collect();
        VecMem {
            frames: vec![vec![POISON; PAGE_SIZE]; n],
            mfns,
            by_mfn,
            fail_on: None,
        }
    }

    pub fn frame(&self, pfn: u64) -> &[u8] {
        &self.frames[usize::try_from(pfn).unwrap()]
    }

    pub fn frame_of_mfn(&self, mfn: u64) -> Option<&[u8]> {
        self.by_mfn.get(&mfn).map(|&i| &self.frames[i][..])
    }

    pub fn pfn_of_mfn(&self, mfn: u64) -> Option<u64> {
        self.by_mfn.get(&mfn).map(|&i| i as u64)
    }

    pub fn mfn_of(&self, pfn: u64) -> u64 {
        self.mfns[usize::try_from(pfn).unwrap()].unwrap()
    }

    /// Byte `addr` of pseudo-physical memory.
    pub fn byte(&self, addr: u64) -> u8 {
        self.frame(addr / 4096)[usize::try_from(addr % 4096).unwrap()]
    }

    pub fn u64_at(&self, pfn: u64, index: usize) -> u64 {
        let f = self.frame(pfn);
        u64::from_le_bytes(f[index * 8..index * 8 + 8].try_into().unwrap())
    }
}

impl DomainMemory for VecMem {
    fn mfn(&self, pfn: Pfn) -> Option<Mfn> {
        self.mfns
            .get(usize::try_from(pfn.0).ok()?)
            .copied()
            .flatten()
            .map(Mfn)
    }

    fn write(&mut self, pfn: Pfn, offset: usize, bytes: &[u8]) -> Result<(), MemError> {
        if self.fail_on == Some(pfn.0) {
            return Err(MemError::Fault);
        }
        let end = offset
            .checked_add(bytes.len())
            .ok_or(MemError::OutOfRange)?;
        assert!(
            end <= PAGE_SIZE,
            "write past the frame: {offset:#x}+{}",
            bytes.len()
        );
        let f = self
            .frames
            .get_mut(usize::try_from(pfn.0).map_err(|_| MemError::OutOfRange)?)
            .ok_or(MemError::OutOfRange)?;
        f[offset..end].copy_from_slice(bytes);
        Ok(())
    }

    fn zero(&mut self, pfn: Pfn) -> Result<(), MemError> {
        if self.fail_on == Some(pfn.0) {
            return Err(MemError::Fault);
        }
        let f = self
            .frames
            .get_mut(usize::try_from(pfn.0).map_err(|_| MemError::OutOfRange)?)
            .ok_or(MemError::OutOfRange)?;
        f.fill(0);
        Ok(())
    }
}

/// `Display` of `v` as a `String`.
pub fn shown(v: impl core::fmt::Display) -> String {
    use std::string::ToString;
    v.to_string()
}

/// A bzImage around `stream` (a compressed kernel): a setup header of boot protocol
/// 2.15 with one setup sector (the protected-mode part at 1024), the payload 0x40
/// bytes into it, Linux's 4-byte decompressed size after the stream, and 32 bytes
/// of trailer.
pub fn bzimage(stream: &[u8], decompressed_len: u32) -> Vec<u8> {
    let payload_offset = 0x40usize;
    let start = 1024 + payload_offset;
    let mut img = vec![0u8; start];
    img[0x1F1] = 1;
    img[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
    img[0x200] = 0xEB;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    img[0x248..0x24C].copy_from_slice(&u32::try_from(payload_offset).unwrap().to_le_bytes());
    let len = u32::try_from(stream.len() + 4).unwrap();
    img[0x24C..0x250].copy_from_slice(&len.to_le_bytes());
    img.extend_from_slice(stream);
    img.extend_from_slice(&decompressed_len.to_le_bytes());
    img.extend_from_slice(&[0x5A; 32]);
    img
}

/// `data` compressed by `tool` with `args` (e.g. `xz --format=xz --check=crc32 --x86
/// --lzma2`), or `None` when the tool is missing or fails.
pub fn compress_with(tool: &str, args: &[&str], data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    out.status.success().then_some(out.stdout)
}

/// The arguments Linux's `scripts/xz_wrap.sh` gives `xz` on x86 (with a small
/// dictionary: 1 MiB).
pub const XZ_ARGS: &[&str] = &[
    "--format=xz",
    "--check=crc32",
    "--x86",
    "--lzma2=dict=1MiB",
    "-c",
];
/// The arguments Linux's `cmd_gzip` gives `gzip`.
pub const GZIP_ARGS: &[&str] = &["-n", "-9", "-c"];

/// [`Spec::small`]'s image, XZ-compressed as Linux does it, by the host's `xz`
/// (`scripts/setup` installs xz-utils).
pub fn small_xz() -> Vec<u8> {
    compress_with("xz", XZ_ARGS, &Spec::small().build())
        .expect("running `xz` (package xz-utils; scripts/setup installs it)")
}

/// [`Spec::small`]'s image, gzip-compressed by the host's `gzip`.
pub fn small_gz() -> Vec<u8> {
    compress_with("gzip", GZIP_ARGS, &Spec::small().build()).expect("running `gzip` (package gzip)")
}

/// [`Spec::small`]'s image as an XZ bzImage.
pub fn small_bzimage() -> Vec<u8> {
    let elf = Spec::small().build();
    bzimage(&small_xz(), u32::try_from(elf.len()).unwrap())
}
