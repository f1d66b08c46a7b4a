//! Identifiers. UUIDv7 everywhere: time-ordered, so they sort and paginate without a second column.

/// A new time-ordered identifier as 32 lowercase hex digits (NodeTool ids carry no dashes).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_ordered() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(a < b, "UUIDv7 ids must sort by creation time: {a} !< {b}");
    }
}
