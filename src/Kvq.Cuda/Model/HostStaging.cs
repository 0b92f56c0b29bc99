namespace Kvq.Cuda.Model;

/// <summary>
/// The host-span side of a device KV sequence (<see cref="Cache.IKvSequence"/>'s Append and Attend, so that the CPU
/// <c>Transformer</c> can run over a device cache): keys, values and queries copied up into device buffers, the
/// attention output copied down, each buffer grown on demand and kept for the next call. One instance per sequence
/// (<see cref="CudaKvSequence"/>, <see cref="Distributed.ShardedKvSequence"/>); not thread-safe, as the sequences.
/// </summary>
internal sealed class HostStaging(CudaContext ctx) : IDisposable
{
    private DeviceBuffer? _k, _v, _q, _out;

    /// <summary>Appends n tokens' keys and values (f32 [n][<paramref name="kvDim"/>]) through <paramref name="seq"/>'s device path.</summary>
    public void Append(IDeviceKvSequence seq, int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n, int kvDim)
    {
        int len = n * kvDim;
        ctx.MakeCurrent();
        Stage(ref _k, k[..len]);
        Stage(ref _v, v[..len]);
        seq.AppendDevice(layer, _k!.Pointer, _v!.Pointer, n);
    }

    /// <summary>Attention of n query rows (f32 [n][<paramref name="qDim"/>]) through <paramref name="seq"/>'s device
    /// path, the output copied into <paramref name="output"/>.</summary>
    public void Attend(IDeviceKvSequence seq, int layer, ReadOnlySpan<float> q, int n, Span<float> output, int qDim)
    {
        int len = n * qDim;
        ctx.MakeCurrent();
        Stage(ref _q, q[..len]);
        Grow(ref _out, len * 4L);
        seq.AttendDevice(layer, _q!.Pointer, n, _out!.Pointer);
        _out.CopyTo(output[..len]);
    }

    private void Stage(ref DeviceBuffer? buf, ReadOnlySpan<float> data)
    {
        Grow(ref buf, data.Length * 4L);
        buf!.CopyFrom(data);
    }

    private void Grow(ref DeviceBuffer? buf, long bytes)
    {
        if (buf != null && buf.Bytes >= bytes) return;
        buf?.Dispose();
        buf = ctx.Allocate(Math.Max(bytes, 256));
    }

    public void Dispose()
    {
        _k?.Dispose();
        _v?.Dispose();
        _q?.Dispose();
        _out?.Dispose();
        _k = _v = _q = _out = null;
    }
}
