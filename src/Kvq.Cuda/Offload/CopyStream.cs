using Kvq.Cuda.Model;
using Kvq.Cuda.Native;

namespace Kvq.Cuda.Offload;

/// <summary>
/// The second stream an <see cref="OffloadedKvSequence"/> copies host blocks in on (model.cu offload_copy, one job per
/// array, KV head and block), per layer: the pinned job lists (one for demand copies, one for speculative ones, grown
/// only after the stream has finished with the old list), the event a layer's attention waits for when copies for it
/// are in flight, and CUDA events around each batch whose times go into <see cref="OffloadStats"/> once complete.
/// </summary>
internal sealed class CopyStream : IDisposable
{
    private readonly CudaContext _ctx;
    private readonly ModelKernels _kernels;
    private readonly OffloadStats _stats;
    private readonly CudaStream _stream;
    private readonly CudaEvent[] _ready, _d0, _d1, _p0, _p1;
    private readonly bool[] _pending, _dTimed, _pTimed;
    private readonly PinnedHostBuffer?[] _demandJobs, _prefetchJobs;   // per layer, grown on demand

    public CopyStream(CudaContext ctx, ModelKernels kernels, int layers, OffloadStats stats)
    {
        _ctx = ctx;
        _kernels = kernels;
        _stats = stats;
        _ready = new CudaEvent[layers];
        _d0 = new CudaEvent[layers];
        _d1 = new CudaEvent[layers];
        _p0 = new CudaEvent[layers];
        _p1 = new CudaEvent[layers];
        _pending = new bool[layers];
        _dTimed = new bool[layers];
        _pTimed = new bool[layers];
        _demandJobs = new PinnedHostBuffer?[layers];
        _prefetchJobs = new PinnedHostBuffer?[layers];
        _stream = new CudaStream();
        try
        {
            for (int l = 0; l < layers; l++)
            {
                _ready[l] = new CudaEvent();
                _d0[l] = new CudaEvent();
                _d1[l] = new CudaEvent();
                _p0[l] = new CudaEvent();
                _p1[l] = new CudaEvent();
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Layer <paramref name="layer"/>'s demand or prefetch job list with room for <paramref name="jobs"/> copies,
    /// to be filled before <see cref="Start"/> or <see cref="RunNow"/>.</summary>
    public Span<CopyJob> Jobs(int layer, bool prefetch, int jobs) =>
        Grow(ref (prefetch ? _prefetchJobs : _demandJobs)[layer], jobs).AsSpan<CopyJob>(0, jobs);

    /// <summary>Starts the first <paramref name="jobs"/> copies of the layer's list on the copy stream, timed; the layer's
    /// next attention waits for them (<see cref="WaitFor"/>).</summary>
    public void Start(int layer, int jobs, bool prefetch)
    {
        if (prefetch) ReadTimes(layer, prefetch: true);   // the last step's prefetch for this layer (its attention waited for it)
        var (start, end) = prefetch ? (_p0[layer], _p1[layer]) : (_d0[layer], _d1[layer]);
        start.Record(_stream);
        _kernels.OffloadCopy((prefetch ? _prefetchJobs : _demandJobs)[layer]!.DevicePointer, jobs, _stream);
        end.Record(_stream);
        if (prefetch) _pTimed[layer] = true;
        else _dTimed[layer] = true;
        _pending[layer] = true;
    }

    /// <summary>Makes the default stream wait for the copies started for <paramref name="layer"/>, if any.</summary>
    public void WaitFor(int layer)
    {
        if (!_pending[layer]) return;
        _ready[layer].Record(_stream);
        Driver.Check(Driver.cuStreamWaitEvent(IntPtr.Zero, _ready[layer].Handle, 0), "cuStreamWaitEvent");
        _pending[layer] = false;
    }

    /// <summary>Runs the first <paramref name="jobs"/> copies of the layer's demand list on the default stream and waits
    /// for them (moves to the host: the list is rewritten and the slots given back next).</summary>
    public void RunNow(int layer, int jobs)
    {
        _kernels.OffloadCopy(_demandJobs[layer]!.DevicePointer, jobs, null);
        _ctx.Synchronize();
    }

    /// <summary>Adds the time a layer's last recorded demand or prefetch copies took (complete when this is called).</summary>
    public void ReadTimes(int layer, bool prefetch)
    {
        if (!prefetch && _dTimed[layer])
        {
            _stats.DemandMs += CudaEvent.Elapsed(_d0[layer], _d1[layer]);
            _dTimed[layer] = false;
        }
        if (prefetch && _pTimed[layer])
        {
            _p1[layer].Synchronize();
            _stats.PrefetchMs += CudaEvent.Elapsed(_p0[layer], _p1[layer]);
            _pTimed[layer] = false;
        }
    }

    /// <summary>Waits for the device and the copy stream, then reads every layer's copy times.</summary>
    public void Settle()
    {
        _ctx.Synchronize();
        _stream.Synchronize();
        for (int l = 0; l < _ready.Length; l++)
        {
            ReadTimes(l, prefetch: false);
            ReadTimes(l, prefetch: true);
        }
    }

    public void Synchronize() => _stream.Synchronize();

    /// <summary>A job list with room for <paramref name="jobs"/> copies (grown after the copy stream has finished with the old one).</summary>
    private PinnedHostBuffer Grow(ref PinnedHostBuffer? buf, int jobs)
    {
        long bytes = jobs * 24L;
        if (buf != null && buf.Bytes >= bytes) return buf;
        _stream.Synchronize();
        _ctx.Synchronize();
        buf?.Dispose();
        buf = new PinnedHostBuffer(_ctx, Math.Max(bytes, 2 * (buf?.Bytes ?? 0)), "block copy lists");
        return buf;
    }

    public void Dispose()
    {
        foreach (var e in new[] { _ready, _d0, _d1, _p0, _p1 }) foreach (var x in e) x?.Dispose();
        foreach (var arr in new[] { _demandJobs, _prefetchJobs }) foreach (var b in arr) b?.Dispose();
        _stream?.Dispose();
    }
}
