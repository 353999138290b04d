//! The operator against a real control plane (kube-apiserver, controller-manager, scheduler,
//! KWOK playing the kubelet) and, where attendance is read, a real `redis-server` into which
//! the tests write what socket pods would. The operator runs in-process, one (or two) per test,
//! each test in its own namespace; one cluster serves the whole binary. Every wait polls a
//! condition with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod capacity;
mod classes;
mod common;
mod events;
mod gateway;
mod leader;
mod replicated;
mod schedule;
mod startup;
