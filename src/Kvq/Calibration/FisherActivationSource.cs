using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Calibration.Fisher;
using Kvq.Model;

namespace Kvq.Calibration;

/// <summary>
/// Activations with Fisher information ("Fisher on"): per window, a forward and a backward pass
/// (<see cref="CalibrationBackward"/>) give the pre-RoPE keys and values and the gradient of the window's mean
/// next-token loss with respect to each; the weights are the squared gradients (<see cref="FisherAccumulator"/>).
/// With <paramref name="rotate"/>, the named sides and their gradients are Hadamard-rotated per window before the
/// gradients are squared (<see cref="RotatedActivations.RotateWindow"/>): the weights are then the Fisher information of
/// the rotated coordinates that a <c>:rot</c> codec quantizes.
/// </summary>
public sealed class FisherActivationSource(KvRotationSides rotate = KvRotationSides.None) : IKvActivationSource
{
    public KvRotationSides Rotation { get; } = rotate;

    public KvActivations Collect(Transformer model, IReadOnlyList<int[]> windows, int sink, Action<int, int>? progress = null,
        CancellationToken cancel = default) => Run(model, windows, sink, Rotation, both: false, progress, cancel).Plain;

    /// <summary>One forward + backward pass per window gives two sets of activations: the plain ones (as
    /// <see cref="Collect"/> with no rotation) and both sides Hadamard-rotated with their rotated Fisher weights (as
    /// <see cref="Collect"/> with <see cref="KvRotationSides.Both"/>): what <c>kvq calibrate --rotate auto</c> fits twice
    /// to choose the rotation per layer, for the cost of one pass.</summary>
    public static (KvActivations Plain, KvActivations Rotated) CollectPlainAndRotated(Transformer model, IReadOnlyList<int[]> windows, int sink,
        Action<int, int>? progress = null, CancellationToken cancel = default)
    {
        var (plain, rotated) = Run(model, windows, sink, KvRotationSides.None, both: true, progress, cancel);
        return (plain, rotated!);
    }

    private static (KvActivations Plain, KvActivations? Rotated) Run(Transformer model, IReadOnlyList<int[]> windows, int sink,
        KvRotationSides rotation, bool both, Action<int, int>? progress, CancellationToken cancel)
    {
        var shape = model.KvShape;
        var acc = new FisherAccumulator(shape.Layers, shape.KvDim, sink);
        var rotAcc = both ? new FisherAccumulator(shape.Layers, shape.KvDim, sink) : null;
        var positions = new List<int>();
        for (int i = 0; i < windows.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            var w = windows[i];
            var g = CalibrationBackward.Compute(model.Weights, w, model.Parallelism);
            if (rotation != KvRotationSides.None) RotatedActivations.RotateWindow(g, shape.HeadDim, rotation);
            acc.Add(g);
            if (rotAcc != null)
            {
                // The accumulator copied the plain rows; the window's arrays are rotated in place for the second set.
                RotatedActivations.RotateWindow(g, shape.HeadDim, KvRotationSides.Both);
                rotAcc.Add(g);
            }
            for (int p = sink; p < w.Length; p++) positions.Add(p);
            progress?.Invoke(i + 1, windows.Count);
        }
        if (acc.Rows == 0) throw new ArgumentException($"no calibration tokens left after the {sink} sink tokens of each window");
        int[] pos = [.. positions];
        return (Activations(acc, shape, pos), rotAcc == null ? null : Activations(rotAcc, shape, pos));
    }

    private static KvActivations Activations(FisherAccumulator acc, KvShape shape, int[] positions)
    {
        var keys = new float[shape.Layers][];
        var values = new float[shape.Layers][];
        var kw = new float[shape.Layers][];
        var vw = new float[shape.Layers][];
        for (int l = 0; l < shape.Layers; l++)
        {
            var k = acc.Samples(l, KvSide.Key);
            var v = acc.Samples(l, KvSide.Value);
            keys[l] = k.Values.ToArray();
            kw[l] = k.Weights.ToArray();
            values[l] = v.Values.ToArray();
            vw[l] = v.Weights.ToArray();
        }
        return new KvActivations(shape, positions, keys, values, kw, vw);
    }
}
