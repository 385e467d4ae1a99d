//! Router tests of the pool pages: list, create, delete, CSV export and import.

#[allow(unused_imports)]
use super::*;
