//! Byte estimates of tables from their capacities: what the allocator hands out for a hash table or a vector of a
//! given capacity. The services' bounded tables add them up against their memory budgets (the
//! detector's host map, the router's suppression groups, incidents and id sets, the producer's flow table).

/// Bytes of a hash table of `capacity` entries of `T` (hashbrown: a power-of-two number of buckets at most 7/8
/// full, one control byte per bucket plus a group's worth), as the allocator hands them out.
pub fn table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        capacity.saturating_mul(8).div_ceil(7).next_power_of_two()
    };
    buckets.saturating_mul(std::mem::size_of::<T>() + 1).saturating_add(16)
}

/// Bytes of a vector's buffer of `capacity` elements of `T`.
pub fn vec_bytes<T>(capacity: usize) -> usize {
    capacity.saturating_mul(std::mem::size_of::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_up_to_a_power_of_two_of_buckets() {
        assert_eq!(table_bytes::<u64>(0), 0);
        // 3 entries: 4 buckets of 8 bytes and a control byte each, plus a group.
        assert_eq!(table_bytes::<u64>(3), 4 * 9 + 16);
        // 14 entries fit 16 buckets at 7/8; 15 need 32.
        assert_eq!(table_bytes::<u64>(14), 16 * 9 + 16);
        assert_eq!(table_bytes::<u64>(15), 32 * 9 + 16);
        assert_eq!(vec_bytes::<u32>(10), 40);
    }
}
