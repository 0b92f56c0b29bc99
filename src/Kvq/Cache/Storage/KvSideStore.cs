using Kvq.Cache.Codecs;
using Kvq.Cache.Layout;
using Kvq.Cache.Offload;

namespace Kvq.Cache.Storage;

/// <summary>
/// The keys (or values) of one sequence as attention reads them: encoded blocks in the cache's arenas, the f16 staging
/// of recent tokens a whole-block codec has not encoded yet, and exact f16 copies of the sink tokens, which replace the
/// first rows of block 0 whenever it is read.
/// </summary>
internal sealed class KvSideStore
{
    public readonly KvCodec[][] Codecs;         // per layer, per head
    public readonly BlockArena[] Arenas;        // per layer (the cache's)
    public readonly SinkStore? Sink;            // exact f16 copies of the first tokens
    public readonly StagingBuffer[]? Staging;   // per layer
    public readonly int[] Sealed;               // per layer: tokens encoded into blocks (multiple of block size)
    private readonly int _blockTokens, _kvHeads;
    private readonly float[] _sealTile;         // (blockTokens, headDim) scratch for a staged block being encoded
    private long _vectors, _elements, _outliers; // what this sequence's encodes stored in sparse rows (one appender at a time)

    public KvSideStore(KvSidePlan plan, BlockArena[] arenas, KvShape shape, int sinkTokens)
    {
        Codecs = plan.Codecs;
        Arenas = arenas;
        Sealed = new int[shape.Layers];
        _blockTokens = plan.Codec.BlockTokens;
        _kvHeads = shape.KvHeads;
        _sealTile = plan.EncodesWholeBlocks ? new float[_blockTokens * shape.HeadDim] : [];
        if (sinkTokens > 0) Sink = new SinkStore(shape.Layers, shape.KvHeads, shape.HeadDim, sinkTokens);
        if (plan.EncodesWholeBlocks)
        {
            Staging = new StagingBuffer[shape.Layers];
            for (int l = 0; l < shape.Layers; l++) Staging[l] = new StagingBuffer(shape.KvHeads, shape.HeadDim, plan.StagingTokens);
        }
    }

    /// <summary>Layer 0, head 0: the kind every codec of the side shares.</summary>
    public KvCodec Codec => Codecs[0][0];

    /// <summary>Whether tokens from <paramref name="s0"/> on are read straight from their encoded block, so a codec's
    /// fused kernel may score or accumulate them: not when staged, nor block 0 while sink rows replace its first tokens.</summary>
    public bool IsEncodedTile(int layer, int s0) => (Staging == null || s0 < Sealed[layer]) && !(s0 == 0 && Sink != null);

    /// <summary>Whether block 0 (from <paramref name="s0"/> = 0) is encoded and its first rows are replaced by sink rows:
    /// a fused kernel may read the block if the sink rows' share is put right afterwards
    /// (<see cref="Attention.KeyScores.Block"/>, <see cref="Attention.BlockAttention"/>).</summary>
    public bool IsEncodedUnderSink(int layer, int s0) => s0 == 0 && Sink != null && (Staging == null || Sealed[layer] > 0)
        && Codecs[layer][0].FusesUnderSink;

    public Span<byte> Block(int layer, int blockId, int head) => Arenas[layer].Block(blockId, head);

    /// <summary>The sparse rows beside a block (formats with <see cref="KvCodec.HasBlockOutliers"/>), else null.</summary>
    public BlockOutliers? Outliers(int layer, int blockId, int head) => Arenas[layer].Outliers(blockId, head);

    /// <summary>Tokens [s0, s0 + count) of one head as (count, headDim) f32 rows: decoded from block
    /// <paramref name="blockId"/> or read from staging, with the sink rows from their exact copies.</summary>
    public void ReadTile(int layer, int head, int s0, int count, int blockId, Span<float> tile)
    {
        if (Staging == null || s0 < Sealed[layer]) Codecs[layer][head].DecodeBlock(Arenas[layer].Block(blockId, head), Arenas[layer].Outliers(blockId, head), count, tile);
        else Staging[layer].Read(head, s0 - Sealed[layer], count, tile);
        if (s0 == 0 && Sink != null) Sink.Overwrite(layer, head, tile, count);
    }

    /// <summary>Stores one head's vector of the token in <paramref name="slot"/> (at RoPE position <paramref name="pos"/>):
    /// encoded into its block, or staged for a whole-block codec; the sink tokens also as exact copies.</summary>
    public void Store(int layer, int head, int slot, int pos, ReadOnlySpan<float> x, ReadOnlySpan<int> blocks)
    {
        if (Sink is { } sink && pos < sink.Tokens) sink.Set(layer, head, pos, x);
        if (Staging is { } staging) staging[layer].Add(head, pos - Sealed[layer], x);
        else
        {
            int b = blocks[slot / _blockTokens], s = slot % _blockTokens;
            var codec = Codecs[layer][head];
            var rows = Arenas[layer].Outliers(b, head);
            codec.EncodeToken(x, Arenas[layer].Block(b, head), rows, s);
            if (rows != null) Count(1, codec.OutlierRowLength, rows.TokenCount(s, codec.OutlierRowLength));
        }
    }

    /// <summary>What this sequence's encodes stored in sparse rows (formats without them count nothing).</summary>
    public KvOutlierCounts OutlierCounts => new(_vectors, _elements, _outliers);

    private void Count(int vectors, int rowLength, int outliers)
    {
        _vectors += vectors;
        _elements += (long)vectors * rowLength;
        _outliers += outliers;
    }

    /// <summary>Encodes the oldest staged block once it is full and older than the residual window (the layer holds
    /// <paramref name="count"/> tokens).</summary>
    public void Seal(int layer, int count, ReadOnlySpan<int> blocks)
    {
        if (Staging is not { } all) return;
        var staging = all[layer];
        int bt = _blockTokens;
        staging.SetCount(count - Sealed[layer]);
        if (staging.Count < bt + Codec.ResidualTokens) return;
        int block = blocks[Sealed[layer] / bt];
        for (int h = 0; h < _kvHeads; h++)
        {
            staging.Read(h, 0, bt, _sealTile);
            var rows = Arenas[layer].Outliers(block, h);
            Codecs[layer][h].EncodeBlock(_sealTile, Arenas[layer].Block(block, h), rows);
            if (rows != null) Count(bt, Codecs[layer][h].OutlierRowLength, rows.Count);
        }
        staging.DropFront(bt);
        Sealed[layer] += bt;
    }

    /// <summary>Offloaded keys: adds the first <paramref name="counts"/>[l] tokens of every layer to
    /// <paramref name="summaries"/> as attention scores them (decoded, rotated at their positions when stored pre-RoPE),
    /// for a sequence whose blocks came from host memory or a session file.</summary>
    public void Summarize(BlockSummaries summaries, KvShape shape, ReadOnlySpan<int> counts, ReadOnlySpan<int> blocks)
    {
        int bt = _blockTokens, hd = shape.HeadDim;
        var tile = new float[bt * hd];
        for (int l = 0; l < shape.Layers; l++)
            for (int s0 = 0; s0 < counts[l]; s0 += bt)
            {
                int cnt = Math.Min(bt, counts[l] - s0);
                var positions = IdentityPositions.Span(s0 + cnt).Slice(s0, cnt);
                for (int h = 0; h < _kvHeads; h++)
                {
                    var t = tile.AsSpan(0, cnt * hd);
                    ReadTile(l, h, s0, cnt, blocks[s0 / bt], t);
                    if (Codec.PreRope) shape.RopeOf(l).RotateAt(t, cnt, positions);
                    for (int i = 0; i < cnt; i++) summaries.Add(l, h, s0 + i, t.Slice(i * hd, hd));
                }
            }
    }

    /// <summary>Bytes held outside blocks: staging and sink copies.</summary>
    public long OutsideBlockBytes
    {
        get
        {
            long n = Sink?.AllocatedBytes ?? 0;
            if (Staging != null) foreach (var s in Staging) n += s.AllocatedBytes;
            return n;
        }
    }

    public void CopySinkFrom(KvSideStore parent)
    {
        if (Sink != null && parent.Sink != null) Sink.CopyFrom(parent.Sink);
    }

    /// <summary>What lives outside blocks: sealed counts, staged tokens, sink copies.</summary>
    public SwappedKv.SideState Save() => new((int[])Sealed.Clone(), Staging?.Select(s => s.Save()).ToArray(), Sink?.Save());

    public void Restore(SwappedKv.SideState state)
    {
        state.Sealed.CopyTo(Sealed, 0);
        if (Staging != null && state.Staging != null)
            for (int l = 0; l < Staging.Length; l++) Staging[l].Restore(state.Staging[l]);
        if (state.Sink != null) Sink?.Restore(state.Sink);
    }
}
