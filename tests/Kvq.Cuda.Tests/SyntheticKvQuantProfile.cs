using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Cuda.Tests;

/// <summary>A KVQuant profile of any shape without a calibration run: random per-channel key scales (pre- and
/// post-RoPE), uniform codebooks for 1-5 bits per layer and stream with made-up calibration errors (odd layers 20x
/// as sensitive, so :mixed gives them more bits), for the fractions 0 (nuqB) and 1% (nuqB-1%). For layout and byte tests: the numbers a cache
/// stores do not matter there, only which codecs the specs build.</summary>
internal static class SyntheticKvQuantProfile
{
    public static KvQuantProfile Create(int layers, int kvHeads, int headDim, int seed = 5)
    {
        var rng = new Random(seed);
        ChannelScales Scales()
        {
            int n = layers * kvHeads * headDim;
            var zero = new float[n];
            var range = new float[n];
            for (int i = 0; i < n; i++)
            {
                zero[i] = (float)rng.NextDouble() - 0.5f;
                range[i] = 0.5f + (float)rng.NextDouble();
            }
            return new ChannelScales(layers, kvHeads, headDim, zero, range);
        }
        KvQuantCalibration Calibration(double fraction)
        {
            var books = new List<(KvQuantStream, int, NuqCodebook)>();
            foreach (var stream in Enum.GetValues<KvQuantStream>())
                for (int l = 0; l < layers; l++)
                    foreach (int b in KvQuantProfile.BitWidths)
                        books.Add((stream, l, new NuqCodebook(NuqCodebook.Uniform(b).Levels.ToArray(), 1f, 0f,
                            (l % 2 == 0 ? 1.0 : 20.0) * (0.9 + 0.2 * rng.NextDouble()) / (1 << (2 * b)))));
            return new KvQuantCalibration(fraction, Scales(), Scales(), books);
        }
        var settings = new KvQuantCalibrationSettings("synthetic", new string('0', 64), 1, 1, 0, (ulong)seed, false);
        return new KvQuantProfile("synthetic", settings, layers, kvHeads, headDim, [Calibration(0), Calibration(0.01)]);
    }
}
