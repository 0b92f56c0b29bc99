namespace Kvq.Cache;

/// <summary>A sequence that can say how many bytes its cache holds (host or device memory).</summary>
public interface IKvMemoryReport
{
    KvMemory Memory();
}
