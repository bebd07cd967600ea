//! [`TenantIds`]: one tenant's id bookkeeping in the index shell. It interns subject ids to
//! small numbers (the groups a [`crate::VectorSearch`] sees), hands out the row slots, and knows
//! which sample and subject each slot holds and which slots each subject has.
//!
//! Slots and subject numbers are reused after release, the last released first: the vector
//! search sizes arrays by the largest of each, so both must stay small and dense.

use std::collections::HashMap;
use std::sync::Arc;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct TenantIds {
    sample_slots: HashMap<Arc<str>, u32>,
    /// Indexed by slot: the sample and the interned subject of the row in it; `None` for a slot
    /// free for reuse.
    slots: Vec<Option<Slot>>,
    free_slots: Vec<u32>,
    subject_ids: HashMap<Arc<str>, u32>,
    /// Indexed by interned subject id; `None` for a freed id awaiting reuse.
    subjects: Vec<Option<SubjectSlots>>,
    free_subjects: Vec<u32>,
}

struct Slot {
    sample: Arc<str>,
    subject: u32,
}

struct SubjectSlots {
    name: Arc<str>,
    slots: Vec<u32>,
}

impl TenantIds {
    /// Bytes of the slots (not the id strings, nor the spare capacity of growing arrays).
    pub fn row_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Option<Slot>>()
    }

    /// The slot holding `sample`.
    pub fn slot(&self, sample: &str) -> Option<u32> {
        self.sample_slots.get(sample).copied()
    }

    /// The interned number of `subject`, while it holds a slot.
    pub fn subject(&self, subject: &str) -> Option<u32> {
        self.subject_ids.get(subject).copied()
    }

    /// Hands out a slot to `sample` (which holds none) of `subject`, interning the subject;
    /// returns the slot and the subject's number.
    pub fn add(&mut self, subject: &str, sample: &str) -> Result<(u32, u32), &'static str> {
        if self.sample_slots.contains_key(sample) {
            return Err("sample already has a slot");
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => u32::try_from(self.slots.len()).map_err(|_| "tenant holds too many templates")?,
        };
        let group = self.intern(subject);
        let sample: Arc<str> = Arc::from(sample);
        let entry = Some(Slot { sample: sample.clone(), subject: group });
        match self.slots.get_mut(slot as usize) {
            Some(free) => *free = entry,
            None => self.slots.push(entry),
        }
        self.sample_slots.insert(sample, slot);
        if let Some(Some(s)) = self.subjects.get_mut(group as usize) {
            s.slots.push(slot);
        }
        Ok((slot, group))
    }

    fn intern(&mut self, subject: &str) -> u32 {
        if let Some(&id) = self.subject_ids.get(subject) {
            return id;
        }
        let name: Arc<str> = Arc::from(subject);
        let entry = Some(SubjectSlots { name: name.clone(), slots: Vec::new() });
        let id = match self.free_subjects.pop() {
            Some(id) => {
                self.subjects[id as usize] = entry;
                id
            }
            None => {
                // Slots are bounded by u32 (checked by the caller) and each live subject has a
                // slot, so the number of subject ids is too.
                self.subjects.push(entry);
                (self.subjects.len() - 1) as u32
            }
        };
        self.subject_ids.insert(name, id);
        id
    }

    /// Releases `slot`, and its subject's number when that was its last slot; false when the
    /// slot was not in use.
    pub fn remove(&mut self, slot: u32) -> bool {
        let Some(entry) = self.slots.get_mut(slot as usize).and_then(Option::take) else { return false };
        if let Some(Some(s)) = self.subjects.get_mut(entry.subject as usize) {
            if let Some(pos) = s.slots.iter().position(|&x| x == slot) {
                s.slots.swap_remove(pos);
            }
            if s.slots.is_empty() {
                self.subject_ids.remove(&s.name);
                self.subjects[entry.subject as usize] = None;
                self.free_subjects.push(entry.subject);
            }
        }
        self.sample_slots.remove(&entry.sample);
        self.free_slots.push(slot);
        true
    }

    /// The slot of `subject` listed last.
    pub fn last_slot(&self, subject: u32) -> Option<u32> {
        self.subjects.get(subject as usize)?.as_ref()?.slots.last().copied()
    }

    /// Every slot of `subject`, in the order they are listed: as added, a removal moving the
    /// last-listed slot into the gap.
    pub fn slots(&self, subject: u32) -> Vec<u32> {
        self.subjects.get(subject as usize).and_then(Option::as_ref).map_or_else(Vec::new, |s| s.slots.clone())
    }

    /// The subject and sample ids of the row in `slot`.
    pub fn names(&self, slot: u32) -> Option<(String, String)> {
        let slot = self.slots.get(slot as usize)?.as_ref()?;
        let subject = self.subjects.get(slot.subject as usize)?.as_ref()?;
        Some((subject.name.to_string(), slot.sample.to_string()))
    }
}

#[cfg(test)]
impl TenantIds {
    /// One past the largest slot handed out.
    pub fn slot_bound(&self) -> usize {
        self.slots.len()
    }

    /// One past the largest subject number handed out.
    pub fn subject_bound(&self) -> usize {
        self.subjects.len()
    }

    /// Checks that every slot is in use or free, and that the slots, samples and subjects all
    /// name one another; returns the slots in use.
    pub fn assert_consistent(&self) -> Vec<u32> {
        let mut live = Vec::new();
        for (slot, entry) in self.slots.iter().enumerate() {
            let slot = slot as u32;
            let Some(entry) = entry else {
                assert!(self.free_slots.contains(&slot), "slot {slot} is neither used nor free");
                continue;
            };
            assert_eq!(self.sample_slots[&entry.sample], slot);
            let subject = self.subjects[entry.subject as usize].as_ref().expect("live subject");
            assert!(subject.slots.contains(&slot));
            assert_eq!(self.subject_ids[&subject.name], entry.subject);
            live.push(slot);
        }
        let listed: usize = self.subjects.iter().flatten().map(|s| s.slots.len()).sum();
        assert_eq!(listed, live.len());
        assert_eq!(self.sample_slots.len(), live.len());
        live
    }
}
