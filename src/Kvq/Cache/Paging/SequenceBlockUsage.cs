namespace Kvq.Cache.Paging;

/// <summary>
/// One sequence's share of the pool, in blocks (tokens for <see cref="Tokens"/>). Exclusive blocks are held by this
/// sequence alone; shared ones by several tables and are stored once, so summing <see cref="Blocks"/> over
/// sequences overstates memory; <see cref="PoolBlockUsage.HeldBlocks"/> is the exact total.
/// </summary>
public readonly record struct SequenceBlockUsage(int Tokens, int Blocks, int ExclusiveBlocks, int SharedBlocks);
