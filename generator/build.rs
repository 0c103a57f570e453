include!("../build-support/revision.rs");
