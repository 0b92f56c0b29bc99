namespace Kvq.Cache;

/// <summary>The memory of a sequence whose kind is not known here (a host or a device cache), through
/// <see cref="IKvMemoryReport"/>.</summary>
public static class KvSequenceMemory
{
    /// <summary>The bytes <paramref name="seq"/> holds; throws when its kind does not report them.</summary>
    public static KvMemory ReportMemory(this IKvSequence seq) => seq is IKvMemoryReport r
        ? r.Memory()
        : throw new InvalidOperationException($"{seq.GetType().Name} does not report its memory (IKvMemoryReport)");
}
