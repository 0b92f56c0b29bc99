using Kvq.Model;

namespace Kvq.Calibration;

/// <summary>Where calibration activations come from: a forward pass only, or with Fisher information as well.</summary>
public interface IKvActivationSource
{
    /// <summary>Runs the model over the windows; tokens at positions below <paramref name="sink"/> are left out.</summary>
    KvActivations Collect(Transformer model, IReadOnlyList<int[]> windows, int sink, Action<int, int>? progress = null,
        CancellationToken cancel = default);
}

/// <summary>Forward passes with an exact f32 cache, recording pre-RoPE keys and values; uniform weights ("Fisher off").</summary>
public sealed class KvActivationCollector : IKvActivationSource
{
    public KvActivations Collect(Transformer model, IReadOnlyList<int[]> windows, int sink, Action<int, int>? progress = null,
        CancellationToken cancel = default)
    {
        var shape = model.KvShape;
        long rows = 0;
        foreach (var w in windows) rows += Math.Max(0, w.Length - sink);
        if (rows == 0) throw new ArgumentException($"no calibration tokens left after the {sink} sink tokens of each window");
        if (rows * shape.KvDim > Array.MaxLength) throw new ArgumentException($"{rows} calibration tokens are too many for one layer's buffer");
        var keys = new float[shape.Layers][];
        var values = new float[shape.Layers][];
        for (int l = 0; l < shape.Layers; l++)
        {
            keys[l] = new float[rows * shape.KvDim];
            values[l] = new float[rows * shape.KvDim];
        }
        var positions = new int[rows];
        var logits = new float[model.Config.VocabSize];
        int row = 0;
        for (int i = 0; i < windows.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            var w = windows[i];
            var seq = new RecordingKvSequence(shape, w.Length, sink, keys, values, row);
            model.Forward(w, seq, logits);
            for (int p = sink; p < w.Length; p++) positions[row + p - sink] = p;
            row += Math.Max(0, w.Length - sink);
            progress?.Invoke(i + 1, windows.Count);
        }
        return new KvActivations(shape, positions, keys, values);
    }
}
