//! The policy on a virtual clock over a scenario: the cluster-free way to try a MemoryTier.
