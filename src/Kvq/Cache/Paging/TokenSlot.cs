namespace Kvq.Cache.Paging;

/// <summary>
/// Where one token's K/V lives: a physical block id (0..BlockCount-1) and the token's offset inside that block
/// (0..TokensPerBlock-1, in tokens). The storage layer turns this into byte addresses; the bookkeeping never does.
/// </summary>
public readonly record struct TokenSlot(int BlockId, int Offset);
