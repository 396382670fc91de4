//! The control protocol between `dom0ctl` on the host and the control agent in
//! dom0, carried over dom0's COM2.
//!
//! * [`frame`]: the envelope (magic, version, kind, request id, length, payload,
//!   CRC-32) and [`FrameDecoder`], which finds frames in a byte stream that may
//!   hold garbage.
//! * [`Request`], [`Response`], [`Event`] ([`Message`] for any of them): the
//!   messages, each with `encode`/`decode` for the payload and
//!   `write_frame`/`from_frame` for whole frames. Kind numbers live in one table
//!   ([`Kind`]); error codes in another ([`ErrorCode`]).
//! * [`validate`]: checks on a create request that both sides run.
//! * [`cpus`]: CPU maps and `xl`'s CPU lists (`cpus =`, hard affinity;
//!   `cpus_soft =`, soft).
//! * [`disk`]: disk specifications in `xl`'s syntax and virtual-device numbers.
//! * [`vif`]: network interface specifications in `xl`'s syntax.
//! * [`images`]: the image bundle dom0 gets as its initrd (named kernels).
//!
//! The full wire description is `docs/control-protocol.md`.
//!
//! # dom0's loop, in brief
//!
//! ```
//! use control_proto::{FrameDecoder, Request, Response};
//!
//! fn serve(dec: &mut FrameDecoder, input: &[u8], out: &mut Vec<u8>) {
//!     let mut rest = input;
//!     while !rest.is_empty() {
//!         let n = dec.push(rest);
//!         rest = &rest[n..];
//!         while let Some(frame) = dec.next_frame() {
//!             let (id, reply) = match frame {
//!                 Ok(frame) => match Request::from_frame(&frame) {
//!                     Ok(Request::List) => (frame.id, Response::Domains(Vec::new())),
//!                     Ok(_) => (frame.id, Response::Ok),
//!                     Err(e) => (frame.id, Response::Error(e.into())),
//!                 },
//!                 Err(e) => (e.id(), Response::Error(e.reply())),
//!             };
//!             if reply.write_frame(id, out).is_err() {
//!                 let err = Response::error(control_proto::ErrorCode::Internal, "reply too long");
//!                 err.write_frame(id, out).expect("a short error fits");
//!             }
//!         }
//!     }
//! }
//! # let mut dec = FrameDecoder::new();
//! # let mut wire = Vec::new();
//! # Request::List.write_frame(1, &mut wire).unwrap();
//! # let mut out = Vec::new();
//! # serve(&mut dec, &wire, &mut out);
//! # assert!(!out.is_empty());
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod cpus;
pub mod crc32;
pub mod disk;
mod error;
pub mod frame;
pub mod images;
mod kind;
mod message;
pub mod validate;
pub mod vif;
mod wire;

pub use crc32::{Crc32, crc32};
pub use error::{DecodeError, ErrorCode, ErrorReply};
pub use frame::{
    Frame, FrameDecoder, FrameError, FrameTooLong, HEADER_LEN, MAGIC, MAX_DATA, MAX_FRAME,
    MAX_PAYLOAD, TRAILER_LEN,
};
pub use kind::{Class, Kind};
pub use message::{
    BlockRow, BridgeInfo, CreateRequest, DeviceRow, DomRef, DomState, DomainInfo, Event,
    ExitAction, HostInfo, ImageInfo, Kernel, Message, Request, Response, ShutdownReason,
    TableState, VcpuRow, VcpuState, VifRow, VolumeDisk, VolumeInfo, XsNode,
};
pub use validate::{
    MAX_CMDLINE_LEN, MAX_MEMORY_MIB, MAX_NAME_LEN, MAX_UNPACKED_KERNEL_BYTES, MAX_UPLOAD_BYTES,
    MAX_VCPUS, MAX_VOLUME_BYTES, MIN_MEMORY_MIB, ValidationError, parse_size, validate_cmdline,
    validate_cpus, validate_image_name, validate_memory_mib, validate_name, validate_vcpus,
    validate_volume_size,
};

/// The protocol version this crate speaks: the byte at offset 2 of every frame,
/// and the `client_version` of [`Request::Hello`].
pub const PROTOCOL_VERSION: u8 = 2;
