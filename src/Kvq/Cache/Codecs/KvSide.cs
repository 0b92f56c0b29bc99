namespace Kvq.Cache.Codecs;

/// <summary>Keys or values: some formats (KIVI, KVQuant) treat them differently.</summary>
public enum KvSide { Key, Value }
