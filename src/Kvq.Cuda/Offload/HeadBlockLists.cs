using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// The block lists a decode step's attention reads (model.cu HeadBlocks): per KV head the physical slot and the logical
/// position of each chosen block, and the head's token count, laid out [slots: head x stride][positions: head x
/// stride][tokens: head] in one device buffer, the stride being the longest head's list (at least 1: a stride of 0
/// means "no block lists" to the kernel).
/// </summary>
internal sealed class HeadBlockLists : IDisposable
{
    private const int BT = CudaKvCache.BlockTokens;
    private readonly int _heads;
    private readonly int[] _host;
    private readonly DeviceBuffer _dev;

    public long DeviceBytes => _dev?.Bytes ?? 0;

    public HeadBlockLists(CudaContext ctx, int heads, int maxBlocks)
    {
        _heads = heads;
        _host = new int[heads * maxBlocks * 2 + heads];
        _dev = ctx.Allocate(_host.Length * 4L);
    }

    /// <summary>Uploads <paramref name="choice"/>'s lists for <paramref name="layer"/> of a sequence of
    /// <paramref name="count"/> tokens: returns the slot list (the kernel's block table), the rest of the lists, and the
    /// longest head's tokens.</summary>
    public (ulong Slots, HeadBlocks Lists, long Longest) Upload(int layer, long count, BlockChoice choice, WorkingSlots slots)
    {
        int heads = _heads, stride = 1;
        for (int h = 0; h < heads; h++) stride = Math.Max(stride, choice.Chosen(h).Length);
        long longest = 0;
        for (int h = 0; h < heads; h++)
        {
            var chosen = choice.Chosen(h);
            long tokens = 0;
            for (int i = 0; i < chosen.Length; i++)
            {
                int b = chosen[i];
                _host[h * stride + i] = slots.PhysicalOf(layer, h, b);
                _host[heads * stride + h * stride + i] = b;
                tokens += Math.Min(BT, count - (long)b * BT);
            }
            _host[2 * heads * stride + h] = (int)tokens;
            longest = Math.Max(longest, tokens);
        }
        _dev.CopyFrom(_host.AsSpan(0, 2 * heads * stride + heads));
        var lists = new HeadBlocks(_dev.Pointer + (ulong)(heads * stride * 4L), _dev.Pointer + (ulong)(2L * heads * stride * 4), stride);
        return (_dev.Pointer, lists, longest);
    }

    public void Dispose() => _dev?.Dispose();
}
