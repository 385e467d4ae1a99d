//! Router tests of the address pages: the table with its filters, an address's detail, its
//! changes and its history.

#[allow(unused_imports)]
use super::*;
