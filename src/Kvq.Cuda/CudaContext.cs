using System.Runtime.InteropServices;
using Kvq.Cuda.Native;

namespace Kvq.Cuda;

/// <summary>What the driver says about a device.</summary>
public sealed record CudaDeviceInfo(int Ordinal, string Name, int ComputeMajor, int ComputeMinor, int Multiprocessors,
    long TotalMemory, int L2Bytes, int MaxSharedPerBlockOptin, int DriverVersion)
{
    /// <summary>NVRTC's name for the architecture, e.g. sm_90.</summary>
    public string Arch => $"sm_{ComputeMajor}{ComputeMinor}";
    public override string ToString() =>
        $"{Name} ({Arch}, {Multiprocessors} SMs, {TotalMemory / (1L << 30)} GiB, driver {DriverVersion / 1000}.{DriverVersion % 1000 / 10})";
}

/// <summary>
/// One device's primary context, retained for the owner's lifetime and made current on the creating thread (the
/// driver binds contexts to threads; <see cref="MakeCurrent"/> binds it to another). Owns nothing else: buffers,
/// modules, streams and events are their own disposable owners created through it.
/// </summary>
public sealed class CudaContext : IDisposable
{
    private IntPtr _ctx;
    public CudaDeviceInfo Device { get; }
    internal IntPtr Handle => _ctx;

    private CudaContext(int ordinal, IntPtr ctx, CudaDeviceInfo info)
    {
        _ordinal = ordinal;
        _ctx = ctx;
        Device = info;
    }

    private readonly int _ordinal;

    /// <summary>Initialises the driver and retains device <paramref name="ordinal"/>'s primary context.
    /// Throws <see cref="CudaUnavailableException"/> when there is no driver or no such device.</summary>
    public static unsafe CudaContext Create(int ordinal = 0)
    {
        NativeLibraries.Require(NativeLibraries.Cuda);
        int r = Driver.cuInit(0);
        if (r == 100) throw new CudaUnavailableException("the CUDA driver found no device (CUDA_ERROR_NO_DEVICE)");
        Driver.Check(r, "cuInit");
        Driver.Check(Driver.cuDeviceGetCount(out int count), "cuDeviceGetCount");
        if (ordinal < 0 || ordinal >= count) throw new CudaUnavailableException($"device {ordinal} asked for, {count} present");
        Driver.Check(Driver.cuDeviceGet(out int dev, ordinal), "cuDeviceGet");
        Driver.Check(Driver.cuDriverGetVersion(out int version), "cuDriverGetVersion");
        byte* name = stackalloc byte[256];
        Driver.Check(Driver.cuDeviceGetName(name, 256, dev), "cuDeviceGetName");
        Driver.Check(Driver.cuDeviceTotalMem(out nuint total, dev), "cuDeviceTotalMem_v2");
        var info = new CudaDeviceInfo(ordinal, Marshal.PtrToStringUTF8((IntPtr)name) ?? "?",
            Attr(dev, Driver.AttrComputeMajor), Attr(dev, Driver.AttrComputeMinor), Attr(dev, Driver.AttrMultiprocessors),
            (long)total, Attr(dev, Driver.AttrL2Bytes), Attr(dev, Driver.AttrMaxSharedPerBlockOptin), version);
        Driver.Check(Driver.cuDevicePrimaryCtxRetain(out var ctx, dev), "cuDevicePrimaryCtxRetain");
        var c = new CudaContext(dev, ctx, info);
        c.MakeCurrent();
        return c;
    }

    /// <summary>How many CUDA devices the driver sees (throws <see cref="CudaUnavailableException"/> without a driver;
    /// 0 when it found none).</summary>
    public static int DeviceCount()
    {
        NativeLibraries.Require(NativeLibraries.Cuda);
        int r = Driver.cuInit(0);
        if (r == 100) return 0;
        Driver.Check(r, "cuInit");
        Driver.Check(Driver.cuDeviceGetCount(out int count), "cuDeviceGetCount");
        return count;
    }

    private static int Attr(int dev, int attribute)
    {
        Driver.Check(Driver.cuDeviceGetAttribute(out int v, attribute, dev), $"cuDeviceGetAttribute({attribute})");
        return v;
    }

    public void MakeCurrent() => Driver.Check(Driver.cuCtxSetCurrent(Live()), "cuCtxSetCurrent");

    public void Synchronize() => Driver.Check(Driver.cuCtxSynchronize(), "cuCtxSynchronize");

    public (long Free, long Total) MemoryInfo()
    {
        Driver.Check(Driver.cuMemGetInfo(out nuint free, out nuint total), "cuMemGetInfo_v2");
        return ((long)free, (long)total);
    }

    public DeviceBuffer Allocate(long bytes) => DeviceBuffer.Allocate(this, bytes);

    public DeviceBuffer Upload<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        var b = DeviceBuffer.Allocate(this, (long)data.Length * Marshal.SizeOf<T>());
        b.CopyFrom(data);
        return b;
    }

    internal IntPtr Live() => _ctx != IntPtr.Zero ? _ctx : throw new ObjectDisposedException(nameof(CudaContext));

    public void Dispose()
    {
        if (_ctx == IntPtr.Zero) return;
        _ctx = IntPtr.Zero;
        Driver.cuDevicePrimaryCtxRelease(_ordinal);   // nothing useful to do with a failure while letting go
    }
}
