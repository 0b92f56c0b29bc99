using System.Runtime.InteropServices;
using Kvq.Cuda.Native;

namespace Kvq.Cuda;

/// <summary>Owns one device allocation (cuMemAlloc); freed on Dispose or, failing that, by the finalizer. The
/// context is made current before freeing because the finalizer thread has none.</summary>
public sealed class DeviceBuffer : SafeHandle
{
    private readonly IntPtr _ctx;
    private readonly DeviceBuffer? _parent;   // a slice keeps its allocation alive; only the allocation is freed
    public long Bytes { get; }
    public ulong Pointer => IsInvalid || IsClosed ? throw new ObjectDisposedException(nameof(DeviceBuffer)) : (ulong)handle;

    private DeviceBuffer(IntPtr ctx, ulong ptr, long bytes, DeviceBuffer? parent = null) : base(IntPtr.Zero, ownsHandle: parent == null)
    {
        _ctx = ctx;
        _parent = parent;
        Bytes = bytes;
        SetHandle(checked((IntPtr)(long)ptr));
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Bytes [offset, offset + bytes) of this allocation as a buffer of its own that frees nothing (the
    /// allocation is freed with this buffer): many small arrays in one cuMemAlloc, which rounds every allocation up
    /// to its page (2 MiB).</summary>
    public DeviceBuffer Slice(long offset, long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "a device buffer needs at least one byte");
        CheckRange(offset, bytes, "slice");
        return new DeviceBuffer(_ctx, Pointer + (ulong)offset, bytes, _parent ?? this);
    }

    /// <summary>Scratch that grows with its largest use: <paramref name="buffer"/> itself when it holds at least
    /// <paramref name="bytes"/>, else a new buffer of that size in <paramref name="ctx"/> (the old one disposed first,
    /// and the reference cleared, so a failed allocation leaves no disposed buffer behind).</summary>
    internal static DeviceBuffer AtLeast([System.Diagnostics.CodeAnalysis.NotNull] ref DeviceBuffer? buffer, CudaContext ctx, long bytes)
    {
        if (buffer != null && buffer.Bytes >= bytes) return buffer;
        buffer?.Dispose();
        buffer = null;
        return buffer = Allocate(ctx, bytes);
    }

    internal static DeviceBuffer Allocate(CudaContext ctx, long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "a device buffer needs at least one byte");
        int r = Driver.cuMemAlloc(out ulong p, (nuint)bytes);
        if (r != 0)
        {
            var e = Driver.Error(r, $"cuMemAlloc_v2({bytes} bytes)");
            var (free, total) = r == 2 ? SafeInfo() : (0, 0);
            if (r == 2) throw new CudaException(e.Call, e.Code, e.ErrorName, $"{e.Message} ({free / (1L << 20)} MiB free of {total / (1L << 20)} MiB)");
            throw e;
        }
        return new DeviceBuffer(ctx.Live(), p, bytes);
    }

    private static (long, long) SafeInfo()
    {
        try { return Driver.cuMemGetInfo(out nuint f, out nuint t) == 0 ? ((long)f, (long)t) : (0, 0); }
        catch (Exception) { return (0, 0); }
    }

    public unsafe void CopyFrom<T>(ReadOnlySpan<T> src, long byteOffset = 0) where T : unmanaged
    {
        long n = (long)src.Length * sizeof(T);
        CheckRange(byteOffset, n, "upload");
        fixed (T* p = src) Driver.Check(Driver.cuMemcpyHtoD(Pointer + (ulong)byteOffset, p, (nuint)n), $"cuMemcpyHtoD_v2({n} bytes)");
    }

    public unsafe void CopyTo<T>(Span<T> dst, long byteOffset = 0) where T : unmanaged
    {
        long n = (long)dst.Length * sizeof(T);
        CheckRange(byteOffset, n, "download");
        fixed (T* p = dst) Driver.Check(Driver.cuMemcpyDtoH(p, Pointer + (ulong)byteOffset, (nuint)n), $"cuMemcpyDtoH_v2({n} bytes)");
    }

    public T[] Download<T>(long count, long byteOffset = 0) where T : unmanaged
    {
        var a = new T[count];
        CopyTo(a, byteOffset);
        return a;
    }

    /// <summary>Device-to-device copy of all of <paramref name="src"/> (at most this buffer's size).</summary>
    public void CopyFromDevice(DeviceBuffer src, CudaStream? stream = null)
    {
        if (src.Bytes > Bytes) throw new ArgumentException($"copy of {src.Bytes} bytes into a {Bytes}-byte device buffer");
        Driver.Check(Driver.cuMemcpyDtoDAsync(Pointer, src.Pointer, (nuint)src.Bytes, stream?.Handle ?? IntPtr.Zero), $"cuMemcpyDtoDAsync_v2({src.Bytes} bytes)");
    }

    /// <summary>Device-to-device copy of <paramref name="bytes"/> bytes of <paramref name="src"/> at
    /// <paramref name="srcOffset"/> to this buffer at <paramref name="dstOffset"/>.</summary>
    public void CopyFromDevice(DeviceBuffer src, long srcOffset, long dstOffset, long bytes, CudaStream? stream = null)
    {
        src.CheckRange(srcOffset, bytes, "device copy");
        CheckRange(dstOffset, bytes, "device copy");
        Driver.Check(Driver.cuMemcpyDtoDAsync(Pointer + (ulong)dstOffset, src.Pointer + (ulong)srcOffset, (nuint)bytes, stream?.Handle ?? IntPtr.Zero),
            $"cuMemcpyDtoDAsync_v2({bytes} bytes)");
    }

    public void Fill(byte value, CudaStream? stream = null) =>
        Driver.Check(Driver.cuMemsetD8Async(Pointer, value, (nuint)Bytes, stream?.Handle ?? IntPtr.Zero), "cuMemsetD8Async");

    private void CheckRange(long offset, long n, string what)
    {
        if (offset < 0 || n < 0 || offset + n > Bytes)
            throw new ArgumentOutOfRangeException(nameof(offset), $"{what} of {n} bytes at {offset} outside a {Bytes}-byte device buffer");
    }

    protected override bool ReleaseHandle()
    {
        Driver.cuCtxSetCurrent(_ctx);
        return Driver.cuMemFree((ulong)handle) == 0;
    }
}
