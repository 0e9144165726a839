//! Writing a write-only C that is too big for the caches: whole cache
//! lines, non-temporal stores.
//!
//! An AMX run of tiles (`microkernel_amx::kernel_run`) hands each finished
//! 32×32 tile here, a few rows at a time, instead of storing it into C
//! with `tilestored`.

use std::arch::x86_64::*;

use super::matmul_packed::TileOut;
use super::microkernel_amx::{MR, NR};

/// Tiles written through [`StreamC`] so far (tests check the path ran).
#[cfg(test)]
pub(crate) static STREAMED_TILES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// A run of full tiles side by side along one 32-row strip of a write-only
/// C, stored as whole cache lines with non-temporal stores.
///
/// A C too big for the caches (the LM head's 512×50,257 logits, 103 MB)
/// costs twice over when its tiles are stored plainly: every line is first
/// read from memory (the store needs it owned), and with an odd row length
/// every 64-byte tile row straddles two lines. Here each row's 32 new
/// values are shifted onto line boundaries (`vpermt2ps`), joined with the
/// values the previous tile left over, and written as whole lines that
/// bypass the caches (`vmovntps`), which needs no read. Only the run's
/// first and last line of each row, which it may share with its
/// neighbours, take ordinary masked stores.
#[repr(C, align(64))]
pub(crate) struct StreamC {
    /// The last 16 values of each row of the previous tile.
    prev: [[f32; 16]; MR],
    /// Element (0, 0) of the tile that would continue the run, or null
    /// when no tile has been started since the last `finish`.
    next: *mut f32,
    /// C's row stride.
    rsc: isize,
    /// Element (0, 0) of the tile being written.
    tile: *mut f32,
    /// Whether that tile continues a run (its rows' first lines are whole).
    continues: bool,
}

impl StreamC {
    /// An empty run.
    pub(crate) fn new() -> StreamC {
        StreamC {
            prev: [[0.0; 16]; MR],
            next: std::ptr::null_mut(),
            rsc: 0,
            tile: std::ptr::null_mut(),
            continues: false,
        }
    }

    /// Starts the tile `out`, continuing the run if it starts where the
    /// last tile ended; [`StreamC::rows`] then writes its rows.
    ///
    /// # Safety
    ///
    /// `out` is a full tile with contiguous rows inside C (`TileOut`'s
    /// contract, with beta 0); no other thread writes its elements. Every
    /// row of the last tile has been written. The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn start(&mut self, out: &TileOut) {
        if !self.next.is_null() && (self.next != out.c || self.rsc != out.rsc) {
            // SAFETY: forwarded.
            unsafe { self.finish() };
        }
        self.continues = !self.next.is_null();
        self.tile = out.c;
        self.next = out.c.wrapping_add(NR);
        self.rsc = out.rsc;
        #[cfg(test)]
        STREAMED_TILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes `rows` of the started tile, whose values `tmp` holds
    /// (row-major, `NR` apart). A tile's rows may be written a few at a
    /// time, in order, so that its stores spread between the next tile's
    /// products instead of stalling them all at once.
    ///
    /// # Safety
    ///
    /// As [`StreamC::start`], for the started tile; `rows` within `0..MR`
    /// and after the rows already written.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn rows(&mut self, tmp: &[f32; MR * NR], rows: std::ops::Range<usize>) {
        let started = self.continues;
        for i in rows {
            let row = self.tile.wrapping_offset(i as isize * self.rsc);
            let (s, idx) = offset_in_line(row);
            let line = row.wrapping_sub(s);
            // SAFETY: row i of tmp; `prev` row i.
            let (v0, v1, prev) = unsafe {
                (
                    _mm512_loadu_ps(tmp.as_ptr().add(i * NR)),
                    _mm512_loadu_ps(tmp.as_ptr().add(i * NR + 16)),
                    _mm512_load_ps(self.prev[i].as_ptr()),
                )
            };
            // Line 0: the previous tile's last s values, then v0's first
            // 16 − s; line 1: the rest of v0, then v1's first 16 − s.
            let l0 = _mm512_permutex2var_ps(prev, idx, v0);
            let l1 = _mm512_permutex2var_ps(v0, idx, v1);
            // SAFETY: `line` is 64-byte aligned. Line 0 holds C(i, j) for
            // the tile's first 16 − s columns, and when the run has
            // started, the previous tile's last s (this run's, so this
            // task's); otherwise only those lanes are stored. Line 1 holds
            // the tile's columns 16 − s..32 − s. All inside C (contract).
            unsafe {
                if started {
                    _mm512_stream_ps(line, l0);
                } else {
                    _mm512_mask_storeu_ps(line, 0xffff << s, l0);
                }
                _mm512_stream_ps(line.add(16), l1);
                _mm512_store_ps(self.prev[i].as_mut_ptr(), v1);
            }
        }
    }

    /// Ends the run: writes the last tile's values still held (the last s
    /// of each row) and orders the non-temporal stores before whatever
    /// this thread does next (so a thread that synchronises with it sees
    /// them).
    ///
    /// # Safety
    ///
    /// The tiles started since the last `finish` are still inside C and owned
    /// by this thread. The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn finish(&mut self) {
        if self.next.is_null() {
            return;
        }
        for i in 0..MR {
            let end = self.next.wrapping_offset(i as isize * self.rsc);
            let (s, idx) = offset_in_line(end);
            if s == 0 {
                continue;
            }
            // SAFETY: `prev` row i holds the last tile's columns 16..32 of
            // row i; the line from `end − s` gets its last s in lanes
            // 0..s, which are C(i, j) of that tile (contract).
            unsafe {
                let prev = _mm512_load_ps(self.prev[i].as_ptr());
                let l = _mm512_permutex2var_ps(prev, idx, _mm512_setzero_ps());
                _mm512_mask_storeu_ps(end.wrapping_sub(s), (1u16 << s) - 1, l);
            }
        }
        _mm_sfence();
        self.next = std::ptr::null_mut();
    }
}

/// How many values `p` sits into its cache line, `s` (f32s are 4-byte
/// aligned, so a whole number), and the `vpermt2ps` indices 16 − s, …,
/// 31 − s: lane i of the result takes lane i + 16 − s of a register pair,
/// so the first register's last s values land in lanes 0..s and the
/// second's first 16 − s after them.
#[target_feature(enable = "avx512f")]
fn offset_in_line(p: *const f32) -> (usize, __m512i) {
    let s = (p as usize / 4) % 16;
    let iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    (s, _mm512_add_epi32(iota, _mm512_set1_epi32(16 - s as i32)))
}
