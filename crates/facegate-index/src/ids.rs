//! [`TenantIds`]: one tenant's id bookkeeping in the index shell. It interns subject ids to
//! small numbers (the groups a [`crate::VectorSearch`] sees), hands out the row slots, and knows
//! which sample and subject each slot holds, which slots each subject has, and each subject's
//! tag bits. A subject keeps its number while it has a slot or a tag: tags may be set before the
//! first template arrives.
//!
//! Slots and subject numbers are reused after release, the last released first: the vector
//! search sizes arrays by the largest of each, so both must stay small and dense.
//!
//! # Memory
//! A gallery of tens of millions of rows must fit beside its vectors, so nothing here is
//! allocated per id. Samples and subjects are each a [`Names`] table: a 16-byte [`Key`] per
//! handle, which holds a canonical UUID (what facegate generates for both) or an id of up to 15
//! bytes whole, and otherwise points into one byte arena; and a hash table of bare `u32` handles,
//! hashed and compared through the keys. A subject's slots are a list threaded through a per-slot
//! array. About 24 bytes a slot and 28 a subject, plus their hash tables' 5 bytes a bucket (7/16
//! to 7/8 full, so 6 to 11 bytes an id), and the arena bytes of ids that fit no key.

use std::hash::{BuildHasher, RandomState};

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

/// No slot: the end of a subject's list, or of a free list.
const NONE: u32 = u32::MAX;

/// See the module documentation.
pub(crate) struct TenantIds {
    /// Sample ids; a sample's handle is its slot.
    samples: Names,
    /// Indexed by slot: the subject number of the row in it (stale for a free slot).
    slot_subject: Vec<u32>,
    /// Indexed by slot: the slot listed just before it in its subject's list, [`NONE`] for the
    /// first.
    slot_before: Vec<u32>,
    /// Subject ids; a subject's handle is its number.
    subjects: Names,
    /// Indexed by subject number: its slot listed last, [`NONE`] for none.
    ///
    /// A subject's list runs backwards, from the last-listed slot to the first: the list order
    /// is the one a `Vec` per subject gave before (slots pushed as added, a removal moving the
    /// last-listed slot into the gap, as `swap_remove` does), which decides the ties among a
    /// subject's samples. Running backwards, both pushing and taking off the last slot are
    /// O(1), so removing a subject is linear in its samples; removing one sample walks from the
    /// last-listed to it, as the `Vec`'s search walked from the first. A link back per slot
    /// would make that O(1) too, for 4 more bytes a row, and buy nothing at a handful of samples
    /// per subject.
    subject_last: Vec<u32>,
    /// Indexed by subject number: its tag bits (0 for a released number).
    subject_tags: Vec<u64>,
}

impl Default for TenantIds {
    fn default() -> Self {
        Self {
            samples: Names::new(),
            slot_subject: Vec::new(),
            slot_before: Vec::new(),
            subjects: Names::new(),
            subject_last: Vec::new(),
            subject_tags: Vec::new(),
        }
    }
}

impl TenantIds {
    /// Bytes of the bookkeeping in use: the per-slot and per-subject arrays by their length,
    /// the live id bytes in the arenas, and the hash tables whole (their empty buckets are what
    /// keeps lookups short, not room to grow).
    pub fn row_bytes(&self) -> usize {
        self.samples.bytes()
            + self.subjects.bytes()
            + (self.slot_subject.len() + self.slot_before.len() + self.subject_last.len()) * size_of::<u32>()
            + self.subject_tags.len() * size_of::<u64>()
    }

    /// The slot holding `sample`.
    pub fn slot(&self, sample: &str) -> Option<u32> {
        self.samples.find(sample)
    }

    /// The interned number of `subject`, while it holds a slot or a tag.
    pub fn subject(&self, subject: &str) -> Option<u32> {
        self.subjects.find(subject)
    }

    /// Room for `rows` more samples of as many subjects, so that loading a known number of rows
    /// does not grow the tables step by step (rehashing them each time).
    pub fn reserve(&mut self, rows: usize) {
        for names in [&mut self.samples, &mut self.subjects] {
            names.reserve(rows);
        }
        for v in [&mut self.slot_subject, &mut self.slot_before, &mut self.subject_last] {
            v.reserve(rows);
        }
        self.subject_tags.reserve(rows);
    }

    /// Hands out a slot to `sample` (which holds none) of `subject`, interning the subject;
    /// returns the slot and the subject's number.
    #[cfg(test)]
    pub fn add(&mut self, subject: &str, sample: &str) -> Result<(u32, u32), &'static str> {
        if self.samples.find(sample).is_some() {
            return Err("sample already has a slot");
        }
        self.add_absent(subject, sample)
    }

    /// As [`Self::add`] for a sample the caller has just looked up and found without a slot.
    pub fn add_absent(&mut self, subject: &str, sample: &str) -> Result<(u32, u32), &'static str> {
        let slot = self.samples.insert(sample, TOO_MANY_TEMPLATES)?;
        self.attach(slot, subject)
    }

    /// As [`Self::add_absent`] for a sample not looked up yet, refused when it has a slot: one
    /// probe of each table, which is what restoring a snapshot's rows wants (`crate::snapshot`).
    pub fn add_new(&mut self, subject: &str, sample: &str) -> Result<(u32, u32), &'static str> {
        let (slot, found) = self.samples.find_or_insert(sample, TOO_MANY_TEMPLATES)?;
        if found {
            return Err("a sample listed twice");
        }
        self.attach(slot, subject)
    }

    /// Gives the new `slot` to `subject`, interning it; the slot is released again on failure.
    fn attach(&mut self, slot: u32, subject: &str) -> Result<(u32, u32), &'static str> {
        let group = match self.intern(subject) {
            Ok(group) => group,
            Err(reason) => {
                // Handing the slot back leaves the free slots as they were.
                self.samples.remove(slot);
                return Err(reason);
            }
        };
        let last = self.subject_last.get(group as usize).copied().unwrap_or(NONE);
        set(&mut self.slot_subject, slot, group);
        set(&mut self.slot_before, slot, last);
        set(&mut self.subject_last, group, slot);
        Ok((slot, group))
    }

    /// The number of `subject`, given one now if it has none.
    fn intern(&mut self, subject: &str) -> Result<u32, &'static str> {
        let (group, found) = self.subjects.find_or_insert(subject, "tenant holds too many subjects")?;
        if !found {
            set(&mut self.subject_last, group, NONE);
            set_tags(&mut self.subject_tags, group, 0);
        }
        Ok(group)
    }

    /// Releases `slot`, and its subject's number when that was its last slot and it has no tag;
    /// false when the slot was not in use.
    pub fn remove(&mut self, slot: u32) -> bool {
        if !self.samples.remove(slot) {
            return false;
        }
        let Some(&group) = self.slot_subject.get(slot as usize) else { return true };
        self.unlist(group, slot);
        self.release_if_unused(group);
        true
    }

    /// Releases the number of a subject with no slot and no tag.
    fn release_if_unused(&mut self, group: u32) {
        if self.last_slot(group).is_none() && self.tags(group) == 0 {
            self.subjects.remove(group);
        }
    }

    /// The tag bits of `subject`.
    pub fn tags(&self, subject: u32) -> u64 {
        self.subject_tags.get(subject as usize).copied().unwrap_or(0)
    }

    /// Replaces the tag bits of `subject`, interning it if it has none yet; returns its number,
    /// or `None` once it has neither slot nor tag.
    pub fn set_tags(&mut self, subject: &str, tags: u64) -> Result<Option<u32>, &'static str> {
        let group = match self.subjects.find(subject) {
            Some(group) => group,
            None if tags == 0 => return Ok(None),
            None => self.intern(subject)?,
        };
        set_tags(&mut self.subject_tags, group, tags);
        self.release_if_unused(group);
        Ok(self.subjects.key(group).is_some().then_some(group))
    }

    /// Every subject holding a bit of `from` holds `to` instead.
    pub fn move_tag_bits(&mut self, from: u64, to: u64) {
        for mask in &mut self.subject_tags {
            if *mask & from != 0 {
                *mask = (*mask & !from) | to;
            }
        }
    }

    /// Takes `slot` off its subject's list the way `Vec::swap_remove` would: the last-listed
    /// slot takes its place.
    fn unlist(&mut self, group: u32, slot: u32) {
        let Some(&last) = self.subject_last.get(group as usize) else { return };
        let before = |s: u32| self.slot_before.get(s as usize).copied().unwrap_or(NONE);
        if last == slot {
            set(&mut self.subject_last, group, before(slot));
            return;
        }
        // The slot listed just after `slot`: the list runs backwards from `last`. Bounded by the
        // number of slots, so a damaged list ends the walk rather than looping.
        let mut after = last;
        let mut steps = 0;
        while before(after) != slot {
            after = before(after);
            steps += 1;
            if after == NONE || steps > self.slot_before.len() {
                return;
            }
        }
        let gap_before = before(slot);
        if after == last {
            // `last` is listed right after `slot`: dropping `slot` puts it in the gap already.
            set(&mut self.slot_before, last, gap_before);
        } else {
            let new_last = before(last);
            set(&mut self.slot_before, after, last);
            set(&mut self.slot_before, last, gap_before);
            set(&mut self.subject_last, group, new_last);
        }
    }

    /// The slot of `subject` listed last.
    pub fn last_slot(&self, subject: u32) -> Option<u32> {
        self.subject_last.get(subject as usize).copied().filter(|&s| s != NONE)
    }

    /// Every slot of `subject`, in the order they are listed: as added, a removal moving the
    /// last-listed slot into the gap.
    pub fn slots(&self, subject: u32) -> Vec<u32> {
        let mut slots = Vec::new();
        let mut slot = self.last_slot(subject).unwrap_or(NONE);
        // Bounded by the number of slots, so a damaged list ends the walk rather than looping.
        while slot != NONE && slots.len() < self.slot_before.len() {
            slots.push(slot);
            slot = self.slot_before.get(slot as usize).copied().unwrap_or(NONE);
        }
        slots.reverse();
        slots
    }

    /// Every subject holding a tag, with its tag bits.
    pub fn tagged_subjects(&self) -> Vec<(String, u64)> {
        (0..self.subject_tags.len() as u32)
            .filter(|&group| self.tags(group) != 0)
            .filter_map(|group| Some((self.subjects.name(group)?, self.tags(group))))
            .collect()
    }

    /// The subject and sample ids of the row in `slot`.
    pub fn names(&self, slot: u32) -> Option<(String, String)> {
        let sample = self.samples.name(slot)?;
        let subject = self.subjects.name(*self.slot_subject.get(slot as usize)?)?;
        Some((subject, sample))
    }
}

/// Sets `v[i]`, growing `v` when `i` is past its end (a handle just handed out).
fn set(v: &mut Vec<u32>, i: u32, value: u32) {
    let i = i as usize;
    if i >= v.len() {
        v.resize(i + 1, NONE);
    }
    v[i] = value;
}

/// As [`set`], for the tag bits.
fn set_tags(v: &mut Vec<u64>, i: u32, tags: u64) {
    let i = i as usize;
    if i >= v.len() {
        v.resize(i + 1, 0);
    }
    v[i] = tags;
}

/// Why a slot is refused when every `u32` is in use.
const TOO_MANY_TEMPLATES: &str = "tenant holds too many templates";

/// Id strings by `u32` handle and handles by id: a handle is handed out for an id, names it
/// until released, and is handed out again after, the last released first.
struct Names {
    /// Indexed by handle.
    keys: Vec<Key>,
    /// The bytes of ids too long for a key, end to end.
    arena: Vec<u8>,
    /// Bytes of `arena` no key points at any more.
    garbage: usize,
    /// Every handle in use, by the hash of its id.
    table: HashTable<u32>,
    hasher: RandomState,
    /// The handle released last, [`NONE`] for none: the head of a free list threaded through
    /// the keys of released handles.
    free: u32,
}

impl Names {
    fn new() -> Self {
        Self {
            keys: Vec::new(),
            arena: Vec::new(),
            garbage: 0,
            table: HashTable::new(),
            hasher: RandomState::new(),
            free: NONE,
        }
    }

    fn bytes(&self) -> usize {
        self.keys.len() * size_of::<Key>()
            + self.arena.len().saturating_sub(self.garbage)
            + self.table.allocation_size()
    }

    fn reserve(&mut self, more: usize) {
        self.keys.reserve(more);
        let Self { keys, arena, table, hasher, .. } = self;
        table.reserve(more, |&h| keys.get(h as usize).map_or(0, |k| k.hash(arena, hasher)));
    }

    fn find(&self, id: &str) -> Option<u32> {
        let probe = Probe::of(id);
        let hash = probe.hash(&self.hasher);
        self.table.find(hash, |&h| self.key(h).is_some_and(|k| k.holds(&probe, &self.arena))).copied()
    }

    /// A handle for `id`, which has none; `full` is the reason given when every handle is in
    /// use.
    fn insert(&mut self, id: &str, full: &'static str) -> Result<u32, &'static str> {
        let probe = Probe::of(id);
        let handle = self.claim(&probe, full)?;
        let hash = probe.hash(&self.hasher);
        let Self { keys, arena, table, hasher, .. } = self;
        table.insert_unique(hash, handle, |&h| keys.get(h as usize).map_or(0, |k| k.hash(arena, hasher)));
        Ok(handle)
    }

    /// The handle of `id` and true when it has one, else a new handle for it and false; `full`
    /// as for [`Self::insert`]. One probe of the table where `find` then `insert` take two: the
    /// second was a third of the time restoring a snapshot's ids took.
    fn find_or_insert(&mut self, id: &str, full: &'static str) -> Result<(u32, bool), &'static str> {
        let probe = Probe::of(id);
        let hash = probe.hash(&self.hasher);
        let Self { keys, arena, table, hasher, free, .. } = self;
        let entry = table.entry(
            hash,
            |&h| keys.get(h as usize).is_some_and(|k| k.next_free().is_none() && k.holds(&probe, arena)),
            |&h| keys.get(h as usize).map_or(0, |k| k.hash(arena, hasher)),
        );
        let vacant = match entry {
            Entry::Occupied(found) => return Ok((*found.get(), true)),
            Entry::Vacant(vacant) => vacant,
        };
        // On failure the vacant entry goes unused: the table is as it was.
        let handle = Self::claim_in(keys, arena, free, &probe, full)?;
        vacant.insert(handle);
        Ok((handle, false))
    }

    /// A handle given the key of `probe`'s id, not yet in the table.
    fn claim(&mut self, probe: &Probe<'_>, full: &'static str) -> Result<u32, &'static str> {
        Self::claim_in(&mut self.keys, &mut self.arena, &mut self.free, probe, full)
    }

    fn claim_in(
        keys: &mut Vec<Key>,
        arena: &mut Vec<u8>,
        free: &mut u32,
        probe: &Probe<'_>,
        full: &'static str,
    ) -> Result<u32, &'static str> {
        // What can fail is checked before anything changes.
        let spilled_len = match probe {
            Probe::Packed(_) => 0,
            Probe::Spilled(bytes) => u32::try_from(bytes.len()).map_err(|_| "id longer than 4 GiB")?,
        };
        let handle = match *free {
            // NONE itself is never a handle: it ends the lists.
            NONE => u32::try_from(keys.len()).ok().filter(|&h| h != NONE).ok_or(full)?,
            handle => handle,
        };
        let key = match probe {
            Probe::Packed(key) => *key,
            Probe::Spilled(bytes) => {
                let key = Key::spilled(arena.len(), spilled_len);
                arena.extend_from_slice(bytes);
                key
            }
        };
        match keys.get_mut(handle as usize) {
            Some(released) => {
                *free = released.next_free().unwrap_or(NONE);
                *released = key;
            }
            None => keys.push(key),
        }
        Ok(handle)
    }

    /// Releases `handle`; false when it was not in use.
    fn remove(&mut self, handle: u32) -> bool {
        let Some(key) = self.key(handle) else { return false };
        let hash = key.hash(&self.arena, &self.hasher);
        if let Ok(entry) = self.table.find_entry(hash, |&h| h == handle) {
            entry.remove();
        }
        if let Some(released) = self.keys.get_mut(handle as usize) {
            *released = Key::free(self.free);
            self.free = handle;
        }
        if let Some((_, len)) = key.spill() {
            self.garbage += len;
            self.collect_garbage();
        }
        true
    }

    /// Rewrites the arena without its garbage once that is more than half of it. A pass visits
    /// every key, so it also waits for a byte of garbage per key: each pass is then paid for by
    /// the bytes released since the one before, and churn neither grows the arena without bound
    /// nor rewrites it on every release.
    fn collect_garbage(&mut self) {
        if self.garbage >= self.arena.len() {
            self.arena = Vec::new();
            self.garbage = 0;
            return;
        }
        if 2 * self.garbage <= self.arena.len() || self.garbage < self.keys.len() {
            return;
        }
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        for key in &mut self.keys {
            let Some((start, len)) = key.spill() else { continue };
            let Some(bytes) = self.arena.get(start..start + len) else { continue };
            // `len` came from a u32, and so fits one again.
            *key = Key::spilled(arena.len(), len as u32);
            arena.extend_from_slice(bytes);
        }
        self.arena = arena;
        self.garbage = 0;
    }

    /// The key of a handle in use.
    fn key(&self, handle: u32) -> Option<Key> {
        self.keys.get(handle as usize).copied().filter(|k| k.next_free().is_none())
    }

    fn name(&self, handle: u32) -> Option<String> {
        self.key(handle)?.text(&self.arena)
    }
}

/// An id looked up: packed into its key, or too long for one.
enum Probe<'a> {
    Packed(Key),
    Spilled(&'a [u8]),
}

impl<'a> Probe<'a> {
    fn of(id: &'a str) -> Self {
        Key::pack(id).map_or(Probe::Spilled(id.as_bytes()), Probe::Packed)
    }

    /// As [`Key::hash`] hashes the key that holds the same id: each id has one form only.
    fn hash(&self, hasher: &RandomState) -> u64 {
        match self {
            Probe::Packed(key) => hasher.hash_one(key.0),
            Probe::Spilled(bytes) => hasher.hash_one(bytes),
        }
    }
}

/// One id in 16 bytes, by its lowest bits:
/// - `..1`, a canonical UUID: the next bit says its hex digits are capitals, and the 126 above
///   are the UUID less its two variant bits (RFC 9562's `10`, which every UUID version has);
/// - `00`, an id of at most [`INLINE_MAX`] bytes: the next 6 bits its length, the 15 bytes above
///   its bytes, zero after the end; a length of [`FREE_LEN`] marks a released handle instead,
///   with the next free one in bits 32 to 64;
/// - `10`, any other id: its length in bits 8 to 40, its place in the arena in bits 64 to 128.
///
/// An id has exactly one form (a UUID is longer than [`INLINE_MAX`]), so equal ids have equal
/// packed keys, and keys are hashed and compared without decoding them.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key(u128);

/// The longest id held in a key: all 16 bytes but the one for the form and length.
const INLINE_MAX: usize = 15;
/// The 6 bits above an inline key's form: its length.
const INLINE_LEN: u128 = 0x3f;
/// An inline length no id has (above [`INLINE_MAX`]): the mark of a released handle.
const FREE_LEN: u128 = INLINE_LEN;
/// The form bits (the lowest two) of a key pointing into the arena.
const FORM_SPILLED: u128 = 0b10;
/// The bit above a UUID key's form bit: set when its hex digits are capitals.
const UUID_CAPITALS: u128 = 0b10;
/// The length of a UUID's text form.
const UUID_LEN: usize = 36;
/// The 62 bits of a UUID under its variant bits.
const BELOW_VARIANT: u128 = (1 << 62) - 1;

impl Key {
    /// The key of `id` when it needs no arena.
    fn pack(id: &str) -> Option<Key> {
        let bytes = id.as_bytes();
        if bytes.len() <= INLINE_MAX {
            let mut packed = [0u8; 16];
            // At most 15, so the length shifted by 2 fits the byte.
            packed[0] = (bytes.len() as u8) << 2;
            packed[1..=bytes.len()].copy_from_slice(bytes);
            return Some(Key(u128::from_le_bytes(packed)));
        }
        Self::pack_uuid(bytes)
    }

    /// `8-4-4-4-12` hex digits, all small letters or all capitals, of the RFC 9562 variant.
    fn pack_uuid(text: &[u8]) -> Option<Key> {
        /// Where the text form of a UUID has its hyphens.
        const HYPHENS: [usize; 4] = [8, 13, 18, 23];
        if text.len() != UUID_LEN {
            return None;
        }
        let (mut value, mut small, mut capitals) = (0u128, false, false);
        for (i, &c) in text.iter().enumerate() {
            if HYPHENS.contains(&i) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let digit = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => {
                    small = true;
                    c - b'a' + 10
                }
                b'A'..=b'F' => {
                    capitals = true;
                    c - b'A' + 10
                }
                _ => return None,
            };
            value = (value << 4) | u128::from(digit);
        }
        // Bits 63 and 62 are the variant, the top of the 17th digit.
        if (small && capitals) || (value >> 62) & 0b11 != 0b10 {
            return None;
        }
        let packed = ((value >> 64) << 62) | (value & BELOW_VARIANT);
        Some(Key((packed << 2) | if capitals { UUID_CAPITALS } else { 0 } | 1))
    }

    fn spilled(start: usize, len: u32) -> Key {
        Key(((start as u128) << 64) | (u128::from(len) << 8) | FORM_SPILLED)
    }

    fn free(next: u32) -> Key {
        Key((u128::from(next) << 32) | (FREE_LEN << 2))
    }

    /// Where the id is in the arena, and its length, for an id that is there.
    fn spill(self) -> Option<(usize, usize)> {
        (self.0 & 0b11 == FORM_SPILLED).then_some(((self.0 >> 64) as usize, (self.0 >> 8) as u32 as usize))
    }

    /// For a released handle's key, the next released handle.
    fn next_free(self) -> Option<u32> {
        (self.0 & 0b11 == 0 && (self.0 >> 2) & INLINE_LEN == FREE_LEN).then_some((self.0 >> 32) as u32)
    }

    fn holds(self, probe: &Probe, arena: &[u8]) -> bool {
        match (probe, self.spill()) {
            (Probe::Packed(key), None) => *key == self,
            (Probe::Spilled(bytes), Some((start, len))) => arena.get(start..start + len) == Some(bytes),
            _ => false,
        }
    }

    fn hash(self, arena: &[u8], hasher: &RandomState) -> u64 {
        match self.spill() {
            None => Probe::Packed(self).hash(hasher),
            Some((start, len)) => Probe::Spilled(arena.get(start..start + len).unwrap_or_default()).hash(hasher),
        }
    }

    /// The id a key in use holds.
    fn text(self, arena: &[u8]) -> Option<String> {
        if let Some((start, len)) = self.spill() {
            return String::from_utf8(arena.get(start..start + len)?.to_vec()).ok();
        }
        if self.0 & 1 == 1 {
            return Some(self.uuid_text());
        }
        let packed = self.0.to_le_bytes();
        let len = usize::from(packed[0] >> 2);
        String::from_utf8(packed.get(1..=len)?.to_vec()).ok()
    }

    fn uuid_text(self) -> String {
        let packed = self.0 >> 2;
        let value = ((packed >> 62) << 64) | (0b10 << 62) | (packed & BELOW_VARIANT);
        let digits: &[u8; 16] = if self.0 & UUID_CAPITALS != 0 { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
        let mut text = String::with_capacity(UUID_LEN);
        for i in 0..32 {
            if matches!(i, 8 | 12 | 16 | 20) {
                text.push('-');
            }
            text.push(char::from(digits[((value >> (4 * (31 - i))) & 0xf) as usize]));
        }
        text
    }
}

#[cfg(test)]
impl TenantIds {
    /// One past the largest slot handed out.
    pub fn slot_bound(&self) -> usize {
        self.samples.keys.len()
    }

    /// One past the largest subject number handed out.
    pub fn subject_bound(&self) -> usize {
        self.subjects.keys.len()
    }

    /// Checks that every slot is in use or free, and that the slots, samples and subjects all
    /// name one another; returns the slots in use.
    pub fn assert_consistent(&self) -> Vec<u32> {
        self.samples.assert_consistent();
        self.subjects.assert_consistent();
        let mut live = Vec::new();
        for slot in 0..self.slot_bound() as u32 {
            let Some(sample) = self.samples.name(slot) else { continue };
            assert_eq!(self.samples.find(&sample), Some(slot));
            let group = self.slot_subject[slot as usize];
            let subject = self.subjects.name(group).expect("a slot's subject is in use");
            assert_eq!(self.subjects.find(&subject), Some(group));
            assert!(self.slots(group).contains(&slot), "slot {slot} is not on its subject's list");
            live.push(slot);
        }
        let mut listed = 0;
        for group in 0..self.subject_bound() as u32 {
            let slots = self.slots(group);
            if self.subjects.name(group).is_none() {
                assert!(slots.is_empty(), "a released subject lists {slots:?}");
                assert_eq!(self.tags(group), 0, "a released subject keeps tags");
                continue;
            }
            assert!(!slots.is_empty() || self.tags(group) != 0, "subject {group} is in use with no slot or tag");
            for &slot in &slots {
                assert_eq!(self.slot_subject[slot as usize], group);
            }
            listed += slots.len();
        }
        assert_eq!(listed, live.len(), "every slot in use is listed once");
        live
    }
}

#[cfg(test)]
impl Names {
    fn assert_consistent(&self) {
        let mut free = std::collections::HashSet::new();
        let mut handle = self.free;
        while handle != NONE {
            assert!(free.insert(handle), "free list loops at {handle}");
            handle = self.keys[handle as usize].next_free().expect("a released handle's key");
        }
        let mut used = 0;
        for handle in 0..self.keys.len() as u32 {
            if free.contains(&handle) {
                assert!(self.key(handle).is_none());
                continue;
            }
            used += 1;
            let name = self.name(handle).expect("a handle in use has a name");
            assert_eq!(self.find(&name), Some(handle));
        }
        assert_eq!(self.table.len(), used);
        let spilled: usize = self.keys.iter().filter_map(|k| k.spill()).map(|(_, len)| len).sum();
        assert_eq!(spilled + self.garbage, self.arena.len());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The bookkeeping as it was before `TenantIds` was compact: the behaviour to keep.
    #[derive(Default)]
    struct Reference {
        sample_slots: HashMap<String, u32>,
        slots: Vec<Option<(String, u32)>>,
        free_slots: Vec<u32>,
        subject_ids: HashMap<String, u32>,
        subjects: Vec<Option<(String, Vec<u32>)>>,
        free_subjects: Vec<u32>,
    }

    impl Reference {
        fn add(&mut self, subject: &str, sample: &str) -> (u32, u32) {
            let slot = self.free_slots.pop().unwrap_or(self.slots.len() as u32);
            let group = match self.subject_ids.get(subject) {
                Some(&group) => group,
                None => {
                    let entry = Some((subject.to_owned(), Vec::new()));
                    let group = match self.free_subjects.pop() {
                        Some(group) => {
                            self.subjects[group as usize] = entry;
                            group
                        }
                        None => {
                            self.subjects.push(entry);
                            self.subjects.len() as u32 - 1
                        }
                    };
                    self.subject_ids.insert(subject.to_owned(), group);
                    group
                }
            };
            let entry = Some((sample.to_owned(), group));
            match self.slots.get_mut(slot as usize) {
                Some(free) => *free = entry,
                None => self.slots.push(entry),
            }
            self.sample_slots.insert(sample.to_owned(), slot);
            self.subjects[group as usize].as_mut().expect("live").1.push(slot);
            (slot, group)
        }

        fn remove(&mut self, slot: u32) -> bool {
            let Some((sample, group)) = self.slots.get_mut(slot as usize).and_then(Option::take) else { return false };
            let (name, slots) = self.subjects[group as usize].as_mut().expect("live");
            let pos = slots.iter().position(|&x| x == slot).expect("listed");
            slots.swap_remove(pos);
            if slots.is_empty() {
                self.subject_ids.remove(name.as_str());
                self.subjects[group as usize] = None;
                self.free_subjects.push(group);
            }
            self.sample_slots.remove(&sample);
            self.free_slots.push(slot);
            true
        }

        fn slots(&self, group: u32) -> Vec<u32> {
            self.subjects.get(group as usize).and_then(Option::as_ref).map_or_else(Vec::new, |s| s.1.clone())
        }
    }

    fn uuid(rng: &mut StdRng) -> String {
        let v: u128 = rng.gen::<u128>() & !(0xf << 76) & !(0b11 << 62) | (0x4 << 76) | (0b10 << 62);
        let hex = format!("{v:032x}");
        format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    }

    /// Ids of every form: UUIDs (packed), short (inline), long and non-ASCII (in the arena).
    fn some_id(rng: &mut StdRng, n: usize) -> String {
        match n % 5 {
            0 => uuid(rng),
            1 => format!("s{n}"),
            2 => format!("a-rather-long-subject-or-sample-id-{n}-{}", "x".repeat(n % 200)),
            3 => format!("Zoë-名前-🙂-{n}"),
            _ => uuid(rng).to_uppercase(),
        }
    }

    #[test]
    fn ids_of_every_form_come_back_as_they_went_in() {
        let cases = [
            ("", true),
            ("a", true),
            ("exactly15bytes!", true),
            ("sixteen bytes!!!", false),
            ("ééééééé.", true), // 15 bytes, 8 characters
            ("éééééééé", false),
            ("9f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f", true),
            ("9F1C2D4E-5B6A-4C7D-8E9F-0A1B2C3D4E5F", true),
            ("12345678-1234-1234-9234-123456789012", true), // no letters at all
            ("0190a5b2-7c3d-7e4f-b0a1-b2c3d4e5f6a7", true), // a version 7
            ("9f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4E5f", false), // mixed case
            ("00000000-0000-0000-0000-000000000000", false), // the nil UUID: variant 0
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", false), // the max UUID: variant 11
            ("9f1c2d4e-5b6a-4c7d-8e9f_0a1b2c3d4e5f", false),
            ("9f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5g", false),
            ("{9f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5}", false),
            ("名前と番号-0001", false),
        ];
        let mut names = Names::new();
        let long = "ü".repeat(300);
        for (id, packed) in cases.iter().copied().chain([(long.as_str(), false)]) {
            assert_eq!(Key::pack(id).is_some(), packed, "{id:?}");
            let handle = names.insert(id, "full").expect("room");
            assert_eq!(names.name(handle).as_deref(), Some(id));
            assert_eq!(names.find(id), Some(handle));
        }
        assert_eq!(names.find("A"), None);
        assert_eq!(names.find("9f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5e"), None);
        names.assert_consistent();
    }

    #[test]
    fn behaves_as_the_bookkeeping_it_replaced_under_churn() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut ids, mut reference) = (TenantIds::default(), Reference::default());
        let subjects: Vec<String> = (0..300).map(|n| some_id(&mut rng, n)).collect();
        let mut samples: Vec<String> = Vec::new();
        for step in 0..20_000 {
            match rng.gen_range(0..10) {
                0..=5 => {
                    let subject = &subjects[rng.gen_range(0..subjects.len())];
                    let sample = some_id(&mut rng, step);
                    if ids.slot(&sample).is_some() {
                        continue;
                    }
                    assert_eq!(ids.add(subject, &sample).ok(), Some(reference.add(subject, &sample)));
                    assert_eq!(ids.add(subject, &sample), Err("sample already has a slot"));
                    samples.push(sample);
                }
                6..=8 if !samples.is_empty() => {
                    let sample = samples.swap_remove(rng.gen_range(0..samples.len()));
                    let slot = ids.slot(&sample).expect("held");
                    assert_eq!(reference.sample_slots.get(&sample), Some(&slot));
                    assert!(ids.remove(slot) && reference.remove(slot));
                    assert!(!ids.remove(slot));
                    assert_eq!(ids.slot(&sample), None);
                }
                _ => {
                    let subject = &subjects[rng.gen_range(0..subjects.len())];
                    let group = ids.subject(subject);
                    assert_eq!(group, reference.subject_ids.get(subject).copied());
                    while let Some(slot) = group.and_then(|g| ids.last_slot(g)) {
                        assert_eq!(group.and_then(|g| reference.slots(g).last().copied()), Some(slot));
                        assert!(ids.remove(slot) && reference.remove(slot));
                    }
                    samples.retain(|s| reference.sample_slots.contains_key(s));
                }
            }
            if step % 1_000 == 0 {
                ids.assert_consistent();
            }
        }
        ids.assert_consistent();
        for (slot, entry) in reference.slots.iter().enumerate() {
            let names = entry.as_ref().map(|(sample, group)| {
                (reference.subjects[*group as usize].as_ref().expect("live").0.clone(), sample.clone())
            });
            assert_eq!(ids.names(slot as u32), names);
        }
        for group in 0..reference.subjects.len() as u32 {
            assert_eq!(ids.slots(group), reference.slots(group), "subject {group}");
        }
        assert_eq!(ids.slot_bound(), reference.slots.len());
        assert_eq!(ids.subject_bound(), reference.subjects.len());
    }

    #[test]
    fn released_slots_and_subject_numbers_are_reused_last_first() {
        let mut ids = TenantIds::default();
        assert_eq!(ids.add("s0", "a"), Ok((0, 0)));
        assert_eq!(ids.add("s1", "b"), Ok((1, 1)));
        assert_eq!(ids.add("s2", "c"), Ok((2, 2)));
        assert!(ids.remove(0) && ids.remove(2));
        assert_eq!(ids.subject("s0"), None);
        assert_eq!(ids.add("s3", "d"), Ok((2, 2)));
        assert_eq!(ids.add("s1", "e"), Ok((0, 1)));
        assert_eq!(ids.add("s4", "f"), Ok((3, 0)));
        assert_eq!(ids.names(3), Some(("s4".to_owned(), "f".to_owned())));
        assert_eq!(ids.slots(1), [1, 0]);
        ids.assert_consistent();
    }

    #[test]
    fn tags_keep_a_subject_without_slots_and_go_with_it() {
        let mut ids = TenantIds::default();
        // Tags may come before the first sample: they intern the subject.
        assert_eq!(ids.set_tags("s", 0b1), Ok(Some(0)));
        assert_eq!(ids.add("s", "a"), Ok((0, 0)));
        assert_eq!(ids.tags(0), 0b1);
        // Its last slot gone, its tags keep it.
        assert!(ids.remove(0));
        assert_eq!(ids.subject("s"), Some(0));
        ids.move_tag_bits(0b1, 0b100);
        assert_eq!(ids.tags(0), 0b100);
        ids.assert_consistent();
        // With neither, its number is released and reused, untagged.
        assert_eq!(ids.set_tags("s", 0), Ok(None));
        assert_eq!(ids.subject("s"), None);
        assert_eq!(ids.set_tags("nobody", 0), Ok(None));
        assert_eq!(ids.subject_bound(), 1);
        assert_eq!(ids.add("t", "b"), Ok((0, 0)));
        assert_eq!(ids.tags(0), 0);
        assert_eq!(ids.set_tags("t", 0b10), Ok(Some(0)));
        assert_eq!(ids.set_tags("t", 0), Ok(Some(0)), "its slot keeps it");
        ids.assert_consistent();
    }

    #[test]
    fn a_subject_with_many_samples_keeps_its_list_order() {
        let mut rng = StdRng::seed_from_u64(9);
        let (mut ids, mut reference) = (TenantIds::default(), Reference::default());
        let samples: Vec<String> = (0..5_000).map(|_| uuid(&mut rng)).collect();
        for sample in &samples {
            assert_eq!(ids.add("crowd", sample).ok(), Some(reference.add("crowd", sample)));
        }
        let group = ids.subject("crowd").expect("interned");
        for sample in samples.iter().step_by(3) {
            let slot = ids.slot(sample).expect("held");
            assert!(ids.remove(slot) && reference.remove(slot));
        }
        assert_eq!(ids.slots(group), reference.slots(group));
        ids.assert_consistent();
        while let Some(slot) = ids.last_slot(group) {
            assert!(ids.remove(slot));
        }
        assert_eq!(ids.subject("crowd"), None);
        assert!(ids.assert_consistent().is_empty());
    }

    #[test]
    fn churn_of_long_ids_does_not_grow_the_arena() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut ids = TenantIds::default();
        let long = |n: u64| format!("imported/sample/{n:08}/{}", "ü".repeat((n % 40) as usize));
        let longest = long(39).len();
        let (mut held, mut live): (Vec<u64>, usize) = (Vec::new(), 0);
        for n in 0..200_000u64 {
            ids.add(&format!("imported/subject/{:08}", n / 2), &long(n)).expect("room");
            held.push(n);
            live += long(n).len();
            if held.len() > 1_000 {
                let gone = held.swap_remove(rng.gen_range(0..held.len()));
                let slot = ids.slot(&long(gone)).expect("held");
                assert!(ids.remove(slot));
                live -= long(gone).len();
            }
            // Garbage waits for half the arena and a byte per key, and one id may have come
            // since the last release.
            let bound = 2 * live + ids.slot_bound() + longest;
            assert!(ids.samples.arena.len() <= bound, "{} bytes for {live} live", ids.samples.arena.len());
        }
        ids.assert_consistent();
        for n in held {
            let slot = ids.slot(&long(n)).expect("held");
            assert!(ids.remove(slot));
        }
        assert!(ids.samples.arena.is_empty() && ids.subjects.arena.is_empty(), "everything released");
        ids.assert_consistent();
    }

    #[test]
    fn uuid_ids_cost_well_under_120_bytes_a_row() {
        const ROWS: usize = 200_000;
        let mut rng = StdRng::seed_from_u64(1);
        let mut ids = TenantIds::default();
        let mut subject = uuid(&mut rng);
        for row in 0..ROWS {
            // One subject in four has two samples, as in `facegate bench search`.
            if row % 5 != 1 {
                subject = uuid(&mut rng);
            }
            ids.add(&subject, &uuid(&mut rng)).expect("room");
        }
        let per_row = ids.row_bytes() as f64 / ROWS as f64;
        assert!(per_row < 80.0, "{per_row} bytes a row");
    }
}
