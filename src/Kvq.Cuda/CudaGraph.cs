using Kvq.Cuda.Native;

namespace Kvq.Cuda;

/// <summary>
/// An executable CUDA graph (CUgraphExec) made by stream capture: the work a callback launches on a stream is recorded
/// instead of run (cuStreamBeginCapture_v2 .. cuStreamEndCapture), instantiated once, then replayed by one
/// <see cref="Launch"/> each time, so a step of many small kernels costs one launch on the host. A replay runs the
/// recorded kernels with the arguments they were captured with: what must change between replays has to live in
/// device memory the kernels read.
/// </summary>
public sealed class CudaGraph : IDisposable
{
    private IntPtr _exec;

    private CudaGraph(IntPtr exec) => _exec = exec;

    /// <summary>Records what <paramref name="record"/> launches on <paramref name="stream"/> (a non-blocking stream: the
    /// legacy default stream cannot be captured) and instantiates it. Thread-local capture mode: a call on this thread
    /// that is not allowed while capturing (a synchronous copy, an allocation) fails the capture instead of running.</summary>
    public static CudaGraph Capture(CudaStream stream, Action record)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(record);
        Driver.Check(Driver.cuStreamBeginCapture(stream.Handle, Driver.CaptureModeThreadLocal), "cuStreamBeginCapture_v2");
        IntPtr graph;
        try
        {
            record();
        }
        catch
        {
            // End the (now invalid) capture so the stream is usable again; its partial graph, if any, is dropped.
            if (Driver.cuStreamEndCapture(stream.Handle, out graph) == 0 && graph != IntPtr.Zero) Driver.cuGraphDestroy(graph);
            throw;
        }
        Driver.Check(Driver.cuStreamEndCapture(stream.Handle, out graph), "cuStreamEndCapture");
        try
        {
            Driver.Check(Driver.cuGraphInstantiateWithFlags(out var exec, graph, 0), "cuGraphInstantiateWithFlags");
            return new CudaGraph(exec);
        }
        finally
        {
            Driver.cuGraphDestroy(graph);   // the executable graph does not need its source graph
        }
    }

    /// <summary>Replays the graph on <paramref name="stream"/> (null: the legacy default stream, in order with the
    /// synchronous copies before and after it).</summary>
    public void Launch(CudaStream? stream = null)
    {
        ObjectDisposedException.ThrowIf(_exec == IntPtr.Zero, this);
        Driver.Check(Driver.cuGraphLaunch(_exec, stream?.Handle ?? IntPtr.Zero), "cuGraphLaunch");
    }

    public void Dispose()
    {
        if (_exec == IntPtr.Zero) return;
        Driver.cuGraphExecDestroy(_exec);
        _exec = IntPtr.Zero;
    }
}
