namespace Kvq.Cache;

/// <summary>Host memory for a KV cache could not be had (a block arena could not grow): the message names the bytes
/// asked and held and what to change. Not a crash: the cache is left as it was, and the CLI prints the message as one
/// line (exit code 2).</summary>
public sealed class KvHostMemoryException(string message, Exception inner) : Exception(message, inner);
