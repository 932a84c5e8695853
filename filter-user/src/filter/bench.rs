//! Hooks for the kernel tests and benchmarks of `hookwall-tests`, built only with the `bench`
//! feature: the daemon carries none of them.

use std::sync::atomic::Ordering;

use filter_common::{Settings, fast as fast_layout, index, map_names};

use super::{Filter, FilterError, Observer, fast, mmap::IndexMmap, words::INDEXES};

impl Filter {
    /// Test hook: calls `observer` after each step of every later [`Filter::apply`] (trie
    /// inserts, each map written, trie removals) with the step's name, so a test can judge
    /// packets between the steps.
    pub fn observe_apply(&mut self, observer: Option<Observer>) {
        self.observer = observer;
    }

    /// Benchmark hook: sets every coarse and summary bit, marks every index block "partial" and
    /// sets [`Settings::skip_narrow`], so each lookup walks the LPM trie as a plain-trie
    /// filter would. Verdicts stay correct; only the fast path is gone until the next
    /// [`Filter::apply`] rewrites the words (the fast map in any case, index words it changes).
    pub fn force_trie_lookups_for_bench(&mut self) -> Result<(), FilterError> {
        let policy = IndexMmap::map(&self.policy, map_names::SETTINGS)?;
        if let Some(settings) = policy.words().first() {
            let skip_narrow = Settings::default().with_skip_narrow().word();
            settings.fetch_or(skip_narrow, Ordering::Release);
        }
        let all_partial = u64::from(u32::MAX) << index::BLOCKS_PER_WORD;
        for (data, name) in self.indexes.iter().zip(INDEXES) {
            let mmap = IndexMmap::map(data, name)?;
            for cell in mmap.words() {
                cell.store(all_partial, Ordering::Release);
            }
        }
        let mut value =
            fast::with_policy(vec![u64::MAX; fast_layout::WORDS], &self.policy_words()?);
        let settings = Settings::from_word(value[fast_layout::POLICY]);
        value[fast_layout::POLICY] = settings.with_skip_narrow().word();
        self.fast.trusted = false;
        self.fast.replace(&value)
    }
}
