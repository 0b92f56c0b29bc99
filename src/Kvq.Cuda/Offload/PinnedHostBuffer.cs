using Kvq.Cuda.Native;

namespace Kvq.Cuda.Offload;

/// <summary>
/// Page-locked host memory (cuMemHostAlloc, portable and mapped): the host tier of an offloaded device cache. The
/// device reads and writes it through <see cref="DevicePointer"/> (zero-copy: offload_copy in model.cu moves blocks
/// across PCIe with many requests in flight, where one cuMemcpy per 4 KB block would be bound by the call overhead).
/// Host memory that cannot be pinned gives a <see cref="HostMemoryException"/> naming the size, not a crash.
/// </summary>
public sealed unsafe class PinnedHostBuffer : IDisposable
{
    private void* _p;
    public long Bytes { get; }
    /// <summary>The same memory as the device addresses it.</summary>
    public ulong DevicePointer { get; }
    internal byte* Host => _p != null ? (byte*)_p : throw new ObjectDisposedException(nameof(PinnedHostBuffer));

    public PinnedHostBuffer(CudaContext ctx, long bytes, string what)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "a pinned host buffer holds at least one byte");
        ctx.MakeCurrent();
        // CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP
        int r = Driver.cuMemHostAlloc(out _p, (nuint)bytes, 0x01 | 0x02);
        if (r == 2 /* CUDA_ERROR_OUT_OF_MEMORY */)
            throw new HostMemoryException($"cannot pin {bytes / (double)(1L << 30):F2} GiB of host memory for {what} (cuMemHostAlloc: {Driver.Error(r, "cuMemHostAlloc").Message})");
        Driver.Check(r, "cuMemHostAlloc");
        Bytes = bytes;
        Driver.Check(Driver.cuMemHostGetDevicePointer(out var d, _p, 0), "cuMemHostGetDevicePointer");
        DevicePointer = d;
    }

    public Span<T> AsSpan<T>(long byteOffset, int count) where T : unmanaged
    {
        if (byteOffset < 0 || byteOffset + (long)count * sizeof(T) > Bytes) throw new ArgumentOutOfRangeException(nameof(count));
        return new Span<T>(Host + byteOffset, count);
    }

    public void Dispose()
    {
        if (_p == null) return;
        Driver.cuMemFreeHost(_p);
        _p = null;
    }
}

/// <summary>Host memory for the host tier could not be had (pinned allocation refused).</summary>
public sealed class HostMemoryException(string message) : Exception(message);
