namespace Kvq.Cache.Paging;

/// <summary>
/// The pool at one moment, in blocks; the storage layer multiplies by its bytes per block (all layers, heads, K and V).
/// HeldBlocks is what live sequences occupy; BlockReferences is what they would occupy with no sharing, so
/// BlockReferences - HeldBlocks blocks are saved by forks and prefix hits. Cached-free blocks are counted in
/// FreeBlocks: they hold reusable prefixes but are given up on demand.
/// </summary>
public readonly record struct PoolBlockUsage(
    int TotalBlocks, int HeldBlocks, int SharedBlocks, int BlockReferences, int CachedFreeBlocks, int FreeBlocks);
