using Kvq.Cuda.Native;

namespace Kvq.Cuda;

/// <summary>Owns a non-blocking stream (work on it does not wait for the legacy default stream).</summary>
public sealed class CudaStream : IDisposable
{
    internal IntPtr Handle { get; private set; }

    public CudaStream()
    {
        Driver.Check(Driver.cuStreamCreate(out var s, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate");
        Handle = s;
    }

    public void Synchronize() => Driver.Check(Driver.cuStreamSynchronize(Handle), "cuStreamSynchronize");

    public void Dispose()
    {
        if (Handle == IntPtr.Zero) return;
        Driver.cuStreamDestroy(Handle);
        Handle = IntPtr.Zero;
    }
}

/// <summary>Owns a timing event.</summary>
public sealed class CudaEvent : IDisposable
{
    internal IntPtr Handle { get; private set; }

    public CudaEvent()
    {
        Driver.Check(Driver.cuEventCreate(out var e, 0), "cuEventCreate");
        Handle = e;
    }

    public void Record(CudaStream? stream = null) => Driver.Check(Driver.cuEventRecord(Handle, stream?.Handle ?? IntPtr.Zero), "cuEventRecord");
    public void Synchronize() => Driver.Check(Driver.cuEventSynchronize(Handle), "cuEventSynchronize");

    /// <summary>Milliseconds between two recorded events (both must have completed).</summary>
    public static float Elapsed(CudaEvent start, CudaEvent end)
    {
        Driver.Check(Driver.cuEventElapsedTime(out float ms, start.Handle, end.Handle), "cuEventElapsedTime");
        return ms;
    }

    public void Dispose()
    {
        if (Handle == IntPtr.Zero) return;
        Driver.cuEventDestroy(Handle);
        Handle = IntPtr.Zero;
    }
}
