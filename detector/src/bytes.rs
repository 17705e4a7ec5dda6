//! Byte estimates of the tables that hold per-host state, from their capacities: what the allocator hands out
//! for a hash table or a vector of a given capacity. The host map (`crate::state`) adds them up against its
//! memory budget.

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
