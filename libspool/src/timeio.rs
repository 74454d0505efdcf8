//! Reading and writing the client's descriptors with deadlines. OWNER: lead.
