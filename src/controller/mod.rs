//! The kube-runtime controller: read → validate → observe → decide → act → status.
