//! Code generated from the subset of etcd's v3 API in `proto/etcd/` (client only, by `build.rs`).
#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
