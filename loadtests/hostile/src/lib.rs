//! Hostile clients, as a library for the black-box tests and the
//! `hostile` drill: a strict upstream that re-parses what a proxy forwards,
//! HTTP/1.1 and HTTP/2 request smuggling vectors, HTTP/2 floods.

pub mod desync;
pub mod floods;
pub mod h2raw;
pub mod peers;
pub mod slow;
pub mod strict;

/// As many open files as the hard limit allows: a drill holding thousands
/// of connections needs one each.
pub fn raise_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}
