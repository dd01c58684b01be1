//! Fitting the cluster into the engines that run it in production.

pub mod systemd;
