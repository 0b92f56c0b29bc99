using System.Numerics.Tensors;
using Kvq.Cache;
using Kvq.Tensors;

namespace Kvq.Model;

/// <summary>
/// The forward pass of a Llama-family decoder, as straight-line code. Tokens go through in chunks of at most
/// <see cref="MaxBatch"/> (batched prefill uses matrix-matrix products; decode is a chunk of one). Keys are handed to
/// the cache before RoPE; queries are rotated here.
/// </summary>
public sealed class Transformer : ChunkedLanguageModel, IBatchedLanguageModel
{
    public ModelWeights Weights { get; }
    public override ModelConfig Config => Weights.Config;
    public override int MaxBatch { get; }
    public Parallelism Parallelism { get; }
    private readonly Rope[] _ropes;   // per layer (Gemma 3's sliding layers rotate with another base)
    private readonly float _queryScale; // a model's own attention scale relative to the cache's 1/sqrt(head dim), times YaRN's

    // Run state, reused across calls (no allocation per token). Shapes are (batch, width) row-major.
    private readonly float[] _x;      // (batch, dim) residual stream
    private readonly float[] _xn;     // (batch, dim) normed input of a sub-block
    private readonly float[] _q;      // (batch, heads*headDim)
    private readonly float[] _k;      // (batch, kvHeads*headDim)
    private readonly float[] _v;      // (batch, kvHeads*headDim)
    private readonly float[] _att;    // (batch, heads*headDim) attention output
    private readonly float[] _proj;   // (batch, dim) output of Wo / WDown
    private readonly float[] _gate;   // (batch, ffn)
    private readonly float[] _up;     // (batch, ffn)
    private readonly float[] _last;   // (batch, dim) last rows of a batch's segments, normed, for the logits
    private readonly Experts.ExpertFeedForward? _experts;   // mixture-of-experts layers' feed-forward
    private readonly Cache.Attention.BatchAttention _batchAttention = new(); // a batched step's paged sequences, one region per layer
    private readonly bool[] _together;  // per segment of a batched step: attended within _batchAttention
    private BatchSegment[] _stepSegments = new BatchSegment[8]; // a batched step's segments, for its per-sequence region

    public Transformer(ModelWeights weights, Parallelism? parallelism = null, int maxBatch = 64)
    {
        Weights = weights;
        MaxBatch = maxBatch;
        Parallelism = parallelism ?? Parallelism.Default;
        var c = weights.Config;
        KvShape = c.CreateKvShape();
        _ropes = Enumerable.Range(0, c.Layers).Select(KvShape.RopeOf).ToArray();
        _queryScale = c.Extras is { AttentionScale: > 0 } e ? e.AttentionScale * MathF.Sqrt(c.HeadDim) : 1f;
        _x = new float[maxBatch * c.Dim];
        _xn = new float[maxBatch * c.Dim];
        _q = new float[maxBatch * c.QDim];
        _k = new float[maxBatch * c.KvDim];
        _v = new float[maxBatch * c.KvDim];
        _att = new float[maxBatch * c.QDim];
        _proj = new float[maxBatch * c.Dim];
        _gate = new float[maxBatch * c.FfnDim];
        _up = new float[maxBatch * c.FfnDim];
        _last = new float[maxBatch * c.Dim];
        _together = new bool[maxBatch];
        if (c.Experts != null) _experts = new Experts.ExpertFeedForward(c.Experts, c.Dim, maxBatch);
    }

    public int MaxBatchTokens => MaxBatch;

    /// <summary>The mixture-of-experts feed-forward shared by every expert layer (null for dense models); set its
    /// <see cref="Experts.ExpertFeedForward.RouterHook"/> to see the router logits.</summary>
    public Experts.ExpertFeedForward? ExpertFfn => _experts;

    /// <summary>Built once: every sequence's cache shares its RoPE angle tables with the queries' rotation.</summary>
    public override KvShape KvShape { get; }
    public override string Device => $"cpu, {Parallelism.Threads} thread{(Parallelism.Threads == 1 ? "" : "s")}";
    public override int Threads => Parallelism.Threads;

    /// <summary>A sequence in a new paged host cache (it grows as needed; <paramref name="maxTokens"/> is a hint).</summary>
    public override IKvSequence CreateSequence(KvCacheConfig config, int maxTokens) => new PagedKvCache(KvShape, config).CreateSequence();

    protected override void ForwardChunk(ReadOnlySpan<int> tokens, IKvSequence kv)
    {
        var c = Config;
        int n = tokens.Length;
        int dim = c.Dim, qDim = c.QDim, kvDim = c.KvDim;
        var par = Parallelism;
        for (int t = 0; t < n; t++)
        {
            int id = tokens[t];
            if ((uint)id >= (uint)c.VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {id} is outside the vocabulary (0..{c.VocabSize - 1})");
            Weights.TokenEmbedding.DequantizeRow(id, _x.AsSpan(t * dim, dim));
        }
        if (c.Extras is { EmbeddingScale: not 1f } ex) TensorPrimitives.Multiply(_x.AsSpan(0, n * dim), ex.EmbeddingScale, _x.AsSpan(0, n * dim));
        int pos0 = kv.Length;
        kv.BeginChunk(tokens);
        for (int l = 0; l < c.Layers; l++)
        {
            var w = Weights.Layers[l];
            // Attention block.
            for (int t = 0; t < n; t++)
                Kernels.RmsNorm(_x.AsSpan(t * dim, dim), w.AttnNorm, c.NormEps, _xn.AsSpan(t * dim, dim));
            Project(w.Wq, _xn, _q, n);
            Project(w.Wk, _xn, _k, n);
            Project(w.Wv, _xn, _v, n);
            for (int t = 0; t < n; t++)
            {
                if (w.Bq != null) TensorPrimitives.Add(_q.AsSpan(t * qDim, qDim), w.Bq, _q.AsSpan(t * qDim, qDim));
                if (w.Bk != null) TensorPrimitives.Add(_k.AsSpan(t * kvDim, kvDim), w.Bk, _k.AsSpan(t * kvDim, kvDim));
                if (w.Bv != null) TensorPrimitives.Add(_v.AsSpan(t * kvDim, kvDim), w.Bv, _v.AsSpan(t * kvDim, kvDim));
                PrepareQueryAndKey(w, l, t, pos0 + t);
            }
            kv.Append(l, _k.AsSpan(0, n * kvDim), _v.AsSpan(0, n * kvDim), n);
            kv.Attend(l, _q.AsSpan(0, n * qDim), n, _att.AsSpan(0, n * qDim), par);
            Project(w.Wo, _att, _proj, n);
            PostNorm(w.AttnPostNorm, n);
            TensorPrimitives.Add(_x.AsSpan(0, n * dim), _proj.AsSpan(0, n * dim), _x.AsSpan(0, n * dim));
            // Feed-forward block (SwiGLU).
            for (int t = 0; t < n; t++)
                Kernels.RmsNorm(_x.AsSpan(t * dim, dim), w.FfnNorm, c.NormEps, _xn.AsSpan(t * dim, dim));
            if (w.Experts != null) _experts!.Forward(w.Experts, _xn, _proj, 0, n, vectorRows: n == 1, par, l);
            else
            {
                Project(w.WGate!, _xn, _gate, n);
                Project(w.WUp!, _xn, _up, n);
                ActivateRows(_gate, _up, n);
                Project(w.WDown!, _gate, _proj, n);
            }
            PostNorm(w.FfnPostNorm, n);
            TensorPrimitives.Add(_x.AsSpan(0, n * dim), _proj.AsSpan(0, n * dim), _x.AsSpan(0, n * dim));
        }
        kv.Commit(n);
    }

    public void ForwardBatch(ReadOnlySpan<int> tokens, ReadOnlySpan<BatchSegment> segments, Span<float> logits)
    {
        var c = Config;
        int n = tokens.Length;
        int dim = c.Dim, qDim = c.QDim;
        int decodeRows = CheckBatch(tokens, segments);
        var par = Parallelism;
        for (int t = 0; t < n; t++)
        {
            int id = tokens[t];
            if ((uint)id >= (uint)c.VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {id} is outside the vocabulary (0..{c.VocabSize - 1})");
            Weights.TokenEmbedding.DequantizeRow(id, _x.AsSpan(t * dim, dim));
        }
        if (c.Extras is { EmbeddingScale: not 1f } ex) TensorPrimitives.Multiply(_x.AsSpan(0, n * dim), ex.EmbeddingScale, _x.AsSpan(0, n * dim));
        foreach (var s in segments) s.Kv.BeginChunk(tokens.Slice(s.Start, s.Count));
        // Paged sequences are attended together, one parallel region per layer (bitwise what each gets alone); any
        // other kind of sequence attends by itself.
        var together = _batchAttention;
        together.Clear();
        for (int i = 0; i < segments.Length; i++)
            _together[i] = segments[i].Kv is PagedKvSequence p && together.TryAdd(p, segments[i].Start, segments[i].Count);
        if (together.Count == 1)
        {
            together.Clear();
            _together.AsSpan(0, segments.Length).Clear();
        }
        // Each layer's per-sequence work (biases, QK-norm, the queries' RoPE, the cache append with its encode) runs over
        // the sequences in one parallel region, and the activation over the rows in another: +5% at 16 and 32 decode
        // sequences on 2 threads (docs/perf.md, branch batch14). Each row's and each sequence's work is the same code on
        // any thread, so the results are those of the calling thread alone (BatchedForwardTests).
        bool parallelAppends = par.Threads > 1 && segments.Length > 1 && AppendConcurrently(segments);
        for (int l = 0; l < c.Layers; l++)
        {
            var w = Weights.Layers[l];
            for (int t = 0; t < n; t++)
                Kernels.RmsNorm(_x.AsSpan(t * dim, dim), w.AttnNorm, c.NormEps, _xn.AsSpan(t * dim, dim));
            ProjectBatch(w.Wq, _xn, _q, segments, decodeRows);
            ProjectBatch(w.Wk, _xn, _k, segments, decodeRows);
            ProjectBatch(w.Wv, _xn, _v, segments, decodeRows);
            if (parallelAppends)
            {
                var job = new SegmentJob(this, l);
                try
                {
                    par.ForEach(segments.Length, ref job);
                }
                catch (AggregateException e) when (e.InnerExceptions.Count == 1)
                {
                    // What the serial loop would throw (a host-memory refusal of the arena, say), not the region's wrapper.
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
                }
            }
            else
                foreach (var s in segments) PrepareAndAppend(l, s);
            for (int i = 0; i < segments.Length; i++)
                if (!_together[i])
                {
                    var s = segments[i];
                    s.Kv.Attend(l, _q.AsSpan(s.Start * qDim, s.Count * qDim), s.Count, _att.AsSpan(s.Start * qDim, s.Count * qDim), par);
                }
            if (together.Count > 0)
            {
                together.Attend(l, _q.AsSpan(0, n * qDim), _att.AsSpan(0, n * qDim), par);
                for (int i = 0; i < segments.Length; i++)
                    if (_together[i])
                    {
                        var s = segments[i];
                        ((PagedKvSequence)s.Kv).AttendedBatch(l, _q.AsSpan(s.Start * qDim, s.Count * qDim), s.Count);
                    }
            }
            ProjectBatch(w.Wo, _att, _proj, segments, decodeRows);
            PostNorm(w.AttnPostNorm, n);
            TensorPrimitives.Add(_x.AsSpan(0, n * dim), _proj.AsSpan(0, n * dim), _x.AsSpan(0, n * dim));
            for (int t = 0; t < n; t++)
                Kernels.RmsNorm(_x.AsSpan(t * dim, dim), w.FfnNorm, c.NormEps, _xn.AsSpan(t * dim, dim));
            if (w.Experts != null) ExpertsBatch(w.Experts, segments, decodeRows, l);
            else
            {
                ProjectBatch(w.WGate!, _xn, _gate, segments, decodeRows);
                ProjectBatch(w.WUp!, _xn, _up, segments, decodeRows);
                ActivateRows(_gate, _up, n);
                ProjectBatch(w.WDown!, _gate, _proj, segments, decodeRows);
            }
            PostNorm(w.FfnPostNorm, n);
            TensorPrimitives.Add(_x.AsSpan(0, n * dim), _proj.AsSpan(0, n * dim), _x.AsSpan(0, n * dim));
        }
        foreach (var s in segments) s.Kv.Commit(s.Count);
        if (parallelAppends) _stepSegments.AsSpan(0, segments.Length).Clear(); // holds no sequence past its step
        // Logits of the wanted rows through the matrix-vector kernels: what a lone sequence's last row gets.
        int wanted = 0;
        foreach (var s in segments)
            if (s.Logits)
                Kernels.RmsNorm(_x.AsSpan((s.Start + s.Count - 1) * dim, dim), Weights.OutputNorm, c.NormEps, _last.AsSpan(wanted++ * dim, dim));
        if (wanted > 0) Weights.Output.MatVecRows(_last.AsSpan(0, wanted * dim), logits[..(wanted * c.VocabSize)], wanted, par);
        if (wanted > 0 && c.Extras is { FinalSoftCap: > 0 } fc) DecoderExtras.SoftCap(logits[..(wanted * c.VocabSize)], fc.FinalSoftCap);
    }

    /// <summary>One segment's rows after the Q/K/V products: biases, QK-norm and the queries' RoPE, then the append
    /// of its keys and values to its sequence (encoded by the sequence's codecs). Touches only the segment's rows and
    /// its own sequence, so the segments of a step may run on different threads (<see cref="SegmentJob"/>).</summary>
    private void PrepareAndAppend(int l, in BatchSegment s)
    {
        var c = Config;
        var w = Weights.Layers[l];
        int qDim = c.QDim, kvDim = c.KvDim;
        int pos0 = s.Kv.Length;
        for (int t = s.Start; t < s.Start + s.Count; t++)
        {
            if (w.Bq != null) TensorPrimitives.Add(_q.AsSpan(t * qDim, qDim), w.Bq, _q.AsSpan(t * qDim, qDim));
            if (w.Bk != null) TensorPrimitives.Add(_k.AsSpan(t * kvDim, kvDim), w.Bk, _k.AsSpan(t * kvDim, kvDim));
            if (w.Bv != null) TensorPrimitives.Add(_v.AsSpan(t * kvDim, kvDim), w.Bv, _v.AsSpan(t * kvDim, kvDim));
            PrepareQueryAndKey(w, l, t, pos0 + t - s.Start);
        }
        s.Kv.Append(l, _k.AsSpan(s.Start * kvDim, s.Count * kvDim), _v.AsSpan(s.Start * kvDim, s.Count * kvDim), s.Count);
    }

    /// <summary>Whether every segment's sequence may append while the others do (paged, without a token policy, rings or
    /// offload: <see cref="PagedKvSequence.AppendsConcurrently"/>); if so the segments are kept for the step's
    /// per-sequence regions (<see cref="SegmentJob"/>, which cannot hold the caller's span).</summary>
    private bool AppendConcurrently(ReadOnlySpan<BatchSegment> segments)
    {
        foreach (var s in segments)
            if (s.Kv is not PagedKvSequence { AppendsConcurrently: true }) return false;
        if (_stepSegments.Length < segments.Length) _stepSegments = new BatchSegment[Math.Max(segments.Length, _stepSegments.Length * 2)];
        segments.CopyTo(_stepSegments);
        return true;
    }

    /// <summary>A batched step's per-sequence work of one layer, one segment per index (claimed one at a time: a prompt
    /// chunk's segment costs as much as many decode rows).</summary>
    private readonly struct SegmentJob(Transformer t, int layer) : IRangeJob
    {
        public void Run(int start, int end)
        {
            for (int i = start; i < end; i++) t.PrepareAndAppend(layer, t._stepSegments[i]);
        }
    }

    /// <summary>The feed-forward activation of <paramref name="n"/> rows of <paramref name="gate"/> and
    /// <paramref name="up"/> ((n, ffn) each; gate gets the result): with several rows and threads, over the rows on every
    /// thread (a prompt chunk's or a batched step's), else on the calling thread. Elementwise, so any split of the rows
    /// gives the floats of one <see cref="Activate"/> over all of them (<c>BatchedForwardTests</c>).</summary>
    internal void ActivateRows(float[] gate, float[] up, int n)
    {
        if (n > 1 && Parallelism.Threads > 1)
        {
            var job = new ActivateJob(this, gate, up);
            Parallelism.For(n, 1, ref job);
        }
        else Activate(gate.AsSpan(0, n * Config.FfnDim), up.AsSpan(0, n * Config.FfnDim));
    }

    /// <summary>The feed-forward activation of rows [start, end).</summary>
    private readonly struct ActivateJob(Transformer t, float[] gate, float[] up) : IRangeJob
    {
        public void Run(int start, int end)
        {
            int ffn = t.Config.FfnDim;
            t.Activate(gate.AsSpan(start * ffn, (end - start) * ffn), up.AsSpan(start * ffn, (end - start) * ffn));
        }
    }

    /// <summary>Row <paramref name="t"/>'s query and key after projection: QK-norm (per-head RMSNorm of both, before RoPE;
    /// the cache gets the normed keys), then RoPE on the query and YaRN's magnitude (<see cref="Rope.QueryScale"/>).</summary>
    private void PrepareQueryAndKey(LayerWeights w, int layer, int t, long position)
    {
        var c = Config;
        var q = _q.AsSpan(t * c.QDim, c.QDim);
        if (w.QNorm != null) HeadNorm(q, c.Heads, c.HeadDim, w.QNorm, c.NormEps);
        if (w.KNorm != null) HeadNorm(_k.AsSpan(t * c.KvDim, c.KvDim), c.KvHeads, c.HeadDim, w.KNorm, c.NormEps);
        var rope = _ropes[layer];
        rope.RotateHeads(q, c.Heads, position);
        float scale = rope.QueryScale * _queryScale;
        if (scale != 1f) TensorPrimitives.Multiply(q, scale, q);
    }

    /// <summary>Gemma's post-norm: RMSNorm of each row of a sub-block's output (_proj) before the residual add.</summary>
    private void PostNorm(float[]? weight, int n)
    {
        if (weight == null) return;
        int dim = Config.Dim;
        for (int t = 0; t < n; t++) Kernels.RmsNorm(_proj.AsSpan(t * dim, dim), weight, Config.NormEps, _proj.AsSpan(t * dim, dim));
    }

    /// <summary>gate = act(gate) * up: SwiGLU, or GeGLU for Gemma.</summary>
    internal void Activate(Span<float> gate, ReadOnlySpan<float> up)
    {
        if (Config.Extras is not { Activation: FfnActivation.GeluTanh }) Kernels.SwiGlu(gate, up);
        else if (Weights.ExactGelu) DecoderExtras.GeGlu(gate, up);
        else GeluHalfTable.GeGlu(gate, up);
    }

    /// <summary>RMSNorm of each head of a (heads*headDim) vector with one (headDim) weight, in place.</summary>
    public static void HeadNorm(Span<float> vec, int heads, int headDim, ReadOnlySpan<float> weight, float eps)
    {
        for (int h = 0; h < heads; h++)
        {
            var head = vec.Slice(h * headDim, headDim);
            Kernels.RmsNorm(head, weight, eps, head);
        }
    }

    /// <summary>Checks a batch's layout; returns its decode rows (they come first).</summary>
    private int CheckBatch(ReadOnlySpan<int> tokens, ReadOnlySpan<BatchSegment> segments)
    {
        if (tokens.Length > MaxBatch) throw new ArgumentException($"a batch of {tokens.Length} tokens exceeds the model's {MaxBatch}");
        int next = 0, decodeRows = 0;
        bool prefillSeen = false;
        for (int i = 0; i < segments.Length; i++)
        {
            var s = segments[i];
            if (s.Start != next || s.Count <= 0) throw new ArgumentException($"batch segment {i} does not continue at row {next}");
            if (s.Decode && prefillSeen) throw new ArgumentException($"batch segment {i}: decode segments must come before prompt chunks");
            for (int j = 0; j < i; j++)
                if (ReferenceEquals(segments[j].Kv, s.Kv)) throw new ArgumentException($"batch segments {j} and {i} are the same sequence");
            if (s.Decode) decodeRows += s.Count;
            else prefillSeen = true;
            next += s.Count;
        }
        if (next != tokens.Length) throw new ArgumentException($"batch segments cover {next} of {tokens.Length} tokens");
        return decodeRows;
    }

    /// <summary>Decode rows [0, decodeRows) through the matrix-vector kernels, together; each prompt chunk through
    /// matrix-matrix products on its own, so that a token's sums do not depend on what else is in the step (the
    /// matrix-matrix kernel treats rows by their offset within the product).</summary>
    private void ProjectBatch(WeightMatrix w, float[] input, float[] output, ReadOnlySpan<BatchSegment> segments, int decodeRows)
    {
        if (decodeRows > 0)
            w.MatVecRows(input.AsSpan(0, decodeRows * w.Cols), output.AsSpan(0, decodeRows * w.Rows), decodeRows, Parallelism);
        foreach (var s in segments)
            if (!s.Decode) // MatMul even for one row: the last row of a prompt sums as it does in a longer chunk
                w.MatMul(input.AsSpan(s.Start * w.Cols, s.Count * w.Cols), output.AsSpan(s.Start * w.Rows, s.Count * w.Rows), s.Count, Parallelism);
    }

    /// <summary>The mixture-of-experts feed-forward of a batch, split as <see cref="ProjectBatch"/> splits: the decode
    /// rows together (each expert's weights read once for all of them), each prompt chunk on its own.</summary>
    private void ExpertsBatch(Experts.ExpertWeights w, ReadOnlySpan<BatchSegment> segments, int decodeRows, int layer)
    {
        if (decodeRows > 0) _experts!.Forward(w, _xn, _proj, 0, decodeRows, vectorRows: true, Parallelism, layer);
        foreach (var s in segments)
            if (!s.Decode) _experts!.Forward(w, _xn, _proj, s.Start, s.Count, vectorRows: false, Parallelism, layer);
    }

    private void Project(WeightMatrix w, float[] input, float[] output, int n)
    {
        if (n == 1) w.MatVec(input.AsSpan(0, w.Cols), output.AsSpan(0, w.Rows), Parallelism);
        else w.MatMul(input.AsSpan(0, n * w.Cols), output.AsSpan(0, n * w.Rows), n, Parallelism);
    }

    /// <summary>Final norm and output projection for chunk rows [first, first+count).</summary>
    protected override void Logits(int first, int count, Span<float> logits)
    {
        int dim = Config.Dim;
        for (int t = 0; t < count; t++)
            Kernels.RmsNorm(_x.AsSpan((first + t) * dim, dim), Weights.OutputNorm, Config.NormEps, _xn.AsSpan(t * dim, dim));
        if (count == 1) Weights.Output.MatVec(_xn.AsSpan(0, dim), logits, Parallelism);
        else Weights.Output.MatMul(_xn.AsSpan(0, count * dim), logits, count, Parallelism);
        if (Config.Extras is { FinalSoftCap: > 0 } e) DecoderExtras.SoftCap(logits[..(count * Config.VocabSize)], e.FinalSoftCap);
    }
}
