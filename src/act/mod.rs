//! Actuators: carry out a decision's actions, idempotently and within budgets.
