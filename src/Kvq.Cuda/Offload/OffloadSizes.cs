namespace Kvq.Cuda.Offload;

/// <summary>How an <see cref="OffloadedKvSequence"/>'s tiers are sized, in 128-token blocks (each block holds every layer
/// and KV head).</summary>
/// <param name="DeviceBlocks">Device-home blocks: the recent part of the sequence and what has not moved to the host;
/// new tokens are appended here.</param>
/// <param name="WorkingBlocks">Device slots per (layer, KV head) for host blocks that attention reads (the working set:
/// at least the budget's blocks, more to keep what the next steps will read again and what speculation brings in).</param>
/// <param name="HostBlocks">Blocks the pinned host tier holds.</param>
/// <param name="Speculate">Predict layer l+1's blocks from layer l's input (its query through layer l+1's Wq) and start
/// their copies while layer l computes.</param>
public sealed record OffloadSizes(int DeviceBlocks, int WorkingBlocks, int HostBlocks, bool Speculate = true);
