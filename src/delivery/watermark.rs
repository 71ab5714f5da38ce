//! The contiguous acknowledgement watermark of one shard.
//!
//! Records finish out of order when several lanes handle one shard; the checkpoint may only
//! move to the highest sequence number below which *every* record is finished (I3). Pages are
//! acknowledged to the shard worker in order, once all their records are finished.

use std::collections::VecDeque;

use crate::record::SequenceNumber;

/// Identifies a record inside the watermark: its page and its position in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RecordId {
    pub(crate) page: u64,
    pub(crate) index: u32,
}

#[derive(Debug)]
struct Page {
    id: u64,
    /// The page's last sequence number (including records skipped before delivery).
    through: SequenceNumber,
    sequence_numbers: Vec<SequenceNumber>,
    done: Vec<bool>,
    /// How many leading records are done.
    prefix: usize,
}

/// What may be acknowledged after some records finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advance {
    /// The checkpoint may move here.
    pub(crate) through: SequenceNumber,
    /// Pages now fully finished.
    pub(crate) pages: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Watermark {
    pages: VecDeque<Page>,
    next_id: u64,
    /// The last position reported, so nothing is reported twice.
    reported: Option<SequenceNumber>,
}

impl Watermark {
    /// Register a page of `sequence_numbers` (ascending) ending at `through`; returns its id.
    pub(crate) fn push_page(
        &mut self,
        through: SequenceNumber,
        sequence_numbers: Vec<SequenceNumber>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let n = sequence_numbers.len();
        self.pages.push_back(Page {
            id,
            through,
            sequence_numbers,
            done: vec![false; n],
            prefix: 0,
        });
        id
    }

    /// Pages registered and not yet fully finished.
    pub(crate) fn open_pages(&self) -> usize {
        self.pages.len()
    }

    /// Records of those pages (finished ones included until their page completes).
    pub(crate) fn open_records(&self) -> usize {
        self.pages.iter().map(|p| p.done.len()).sum()
    }

    /// Mark records finished.
    pub(crate) fn finish(&mut self, ids: impl IntoIterator<Item = RecordId>) {
        let Some(first_id) = self.pages.front().map(|p| p.id) else {
            return;
        };
        for id in ids {
            let Some(page) = id
                .page
                .checked_sub(first_id)
                .and_then(|i| self.pages.get_mut(i as usize))
            else {
                continue;
            };
            if let Some(d) = page.done.get_mut(id.index as usize) {
                *d = true;
            }
            while page.prefix < page.done.len() && page.done[page.prefix] {
                page.prefix += 1;
            }
        }
    }

    /// Drop finished pages from the front and say how far the checkpoint may move.
    pub(crate) fn advance(&mut self) -> Option<Advance> {
        let mut pages = 0;
        let mut through = None;
        while let Some(front) = self.pages.front() {
            if front.prefix == front.done.len() {
                through = Some(front.through.clone());
                pages += 1;
                self.pages.pop_front();
            } else {
                if front.prefix > 0 {
                    through = Some(front.sequence_numbers[front.prefix - 1].clone());
                }
                break;
            }
        }
        let through = through?;
        if pages == 0 && self.reported.as_ref() == Some(&through) {
            return None;
        }
        self.reported = Some(through.clone());
        Some(Advance { through, pages })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(n: u64) -> SequenceNumber {
        format!("{n:021}").parse().expect("seq")
    }

    #[test]
    fn empty_pages_finish_at_once_and_in_order() {
        let mut w = Watermark::default();
        let a = w.push_page(seq(5), vec![seq(1), seq(3)]);
        w.push_page(seq(9), vec![]);
        assert_eq!(w.advance(), None);
        w.finish([RecordId { page: a, index: 1 }]);
        assert_eq!(
            w.advance(),
            None,
            "record 1 is not finished: nothing may move"
        );
        w.finish([RecordId { page: a, index: 0 }]);
        assert_eq!(
            w.advance(),
            Some(Advance {
                through: seq(9),
                pages: 2
            })
        );
        assert_eq!(w.open_pages(), 0);
    }

    #[test]
    fn a_prefix_of_a_page_moves_the_checkpoint_without_completing_it() {
        let mut w = Watermark::default();
        let a = w.push_page(seq(10), vec![seq(1), seq(2), seq(3)]);
        w.finish([RecordId { page: a, index: 0 }]);
        assert_eq!(
            w.advance(),
            Some(Advance {
                through: seq(1),
                pages: 0
            })
        );
        assert_eq!(w.advance(), None, "reported once");
        w.finish([
            RecordId { page: a, index: 1 },
            RecordId { page: a, index: 2 },
        ]);
        assert_eq!(
            w.advance(),
            Some(Advance {
                through: seq(10),
                pages: 1
            })
        );
    }

    proptest! {
        /// Whatever order records finish in, the reported position never passes an unfinished
        /// record and never moves backwards; at the end it reaches the last page.
        #[test]
        fn never_passes_an_unfinished_record(
            sizes in proptest::collection::vec(0usize..6, 1..8),
            order_seed in any::<u64>(),
        ) {
            let mut w = Watermark::default();
            let mut all = Vec::new();
            let mut n = 0u64;
            let mut last_through = seq(0);
            for size in &sizes {
                let seqs: Vec<_> = (0..*size).map(|_| { n += 2; seq(n) }).collect();
                n += 1;
                last_through = seq(n);
                let page = w.push_page(seq(n), seqs.clone());
                for (i, s) in seqs.into_iter().enumerate() {
                    all.push((RecordId { page, index: i as u32 }, s));
                }
            }
            let mut rng = fastrand::Rng::with_seed(order_seed);
            rng.shuffle(&mut all);
            let mut finished = std::collections::HashSet::new();
            let mut reported = seq(0);
            for (id, s) in &all {
                w.finish([*id]);
                finished.insert(s.clone());
                if let Some(a) = w.advance() {
                    prop_assert!(a.through >= reported);
                    reported = a.through.clone();
                    for (_, other) in &all {
                        if other <= &a.through {
                            prop_assert!(finished.contains(other), "{} passed unfinished {}", a.through, other);
                        }
                    }
                }
            }
            if !all.is_empty() || sizes.iter().all(|s| *s == 0) {
                let _ = w.advance();
            }
            prop_assert_eq!(w.open_pages(), 0);
            prop_assert!(reported == last_through || all.is_empty());
        }
    }
}
