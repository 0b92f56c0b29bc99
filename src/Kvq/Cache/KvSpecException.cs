namespace Kvq.Cache;

/// <summary>A KV cache spec that names no known format, or a format this model's shape cannot use.</summary>
public sealed class KvSpecException(string message) : ArgumentException(message);
