//! Finding messages in an mbox: `From ` separators found with memchr-class search over large
//! buffered reads (or pread), never byte at a time, never mmap. OWNER: mbox helper.
