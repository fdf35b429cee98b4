//! Emporium's black-box tests: one binary, one module per concern.

mod accounts;
mod bad_input;
mod concurrency;
mod crash;
mod disk_faults;
mod domain;
mod events;
mod fail_stop;
mod flash_sales;
mod http_api;
mod http_authz;
mod http_connections;
mod http_flash;
mod http_flash_sales;
mod http_overload;
mod http_support;
mod lifecycle;
mod model;
mod power_loss;
mod promotions;
mod recovery;
mod replication;
mod retention;
mod returns;
mod search;
