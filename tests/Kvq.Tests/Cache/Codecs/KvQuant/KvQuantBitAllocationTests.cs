using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

public class KvQuantBitAllocationTests
{
    private static readonly int[] Widths = [2, 3, 4];

    /// <summary>Every assignment of widths to layers, by enumeration (the plain reference for the DP).</summary>
    private static (double Err, int[] Bits) BruteForce(double[][] s, int mean)
    {
        int layers = s.Length;
        double best = double.PositiveInfinity;
        int[]? bestBits = null;
        int combos = (int)Math.Pow(Widths.Length, layers);
        for (int code = 0; code < combos; code++)
        {
            int c = code, sum = 0;
            double e = 0;
            var bits = new int[layers];
            for (int l = 0; l < layers; l++)
            {
                int i = c % Widths.Length;
                c /= Widths.Length;
                bits[l] = Widths[i];
                sum += Widths[i];
                e += s[l][i];
            }
            if (sum != mean * layers || e >= best) continue;
            best = e;
            bestBits = bits;
        }
        return (best, bestBits!);
    }

    private static double Cost(double[][] s, int[] bits) =>
        Enumerable.Range(0, s.Length).Sum(l => s[l][Array.IndexOf(Widths, bits[l])]);

    [Theory]
    [InlineData(1, 3, 2)]
    [InlineData(5, 3, 7)]
    [InlineData(7, 2, 3)]
    [InlineData(7, 4, 4)]
    [InlineData(8, 3, 11)]
    public void MatchesExhaustiveSearchOnRandomSensitivities(int layers, int mean, int seed)
    {
        var r = new Random(seed);
        for (int trial = 0; trial < 20; trial++)
        {
            // Errors fall ~4x per bit as k-means errors do, with layer scales spread over three decades.
            var s = new double[layers][];
            for (int l = 0; l < layers; l++)
            {
                double scale = Math.Pow(10, r.NextDouble() * 3 - 6);
                s[l] = [scale * 16 * (0.5 + r.NextDouble()), scale * 4 * (0.5 + r.NextDouble()), scale * (0.5 + r.NextDouble())];
            }
            var bits = KvQuantBitAllocation.Allocate(s, Widths, mean);
            Assert.Equal(mean * layers, bits.Sum());
            var (bestErr, _) = BruteForce(s, mean);
            Assert.Equal(bestErr, Cost(s, bits), bestErr * 1e-9);
        }
    }

    [Fact]
    public void OneSensitiveLayerTakesBitsFromTheLeastSensitive()
    {
        // The shape seen on books-19m's keys: layer 4 ~20x the rest.
        double[][] s =
        [
            [1.2e-5, 2.9e-6, 7.2e-7], [2.1e-5, 5.5e-6, 1.4e-6], [7.6e-5, 1.9e-5, 4.9e-6], [1.4e-4, 3.7e-5, 9.2e-6],
            [2.9e-3, 7.3e-4, 1.9e-4], [1.0e-4, 2.6e-5, 6.6e-6], [1.6e-4, 4.3e-5, 1.1e-5], [5.1e-5, 1.3e-5, 3.4e-6],
        ];
        var bits = KvQuantBitAllocation.Allocate(s, Widths, 3);
        Assert.Equal(4, bits[4]);
        Assert.Equal(2, bits[0]);
        Assert.Equal(24, bits.Sum());
    }

    [Fact]
    public void EqualSensitivitiesStayUniform()
    {
        var s = Enumerable.Range(0, 6).Select(_ => new double[] { 4, 2, 1 }).ToArray();
        // Spending a bit on one layer saves exactly what taking one from another costs... not here (4-2 != 2-1), so
        // uniform is strictly best; with equal steps the tie rule keeps it uniform too.
        Assert.All(KvQuantBitAllocation.Allocate(s, Widths, 3), b => Assert.Equal(3, b));
        var flat = Enumerable.Range(0, 6).Select(_ => new double[] { 3, 2, 1 }).ToArray();
        Assert.All(KvQuantBitAllocation.Allocate(flat, Widths, 3), b => Assert.Equal(3, b));
    }

    [Fact]
    public void BadInputsAreRefusedWithTheReason()
    {
        double[][] ok = [[3, 2, 1], [3, 2, 1]];
        Assert.Contains("outside", Assert.Throws<ArgumentException>(() => KvQuantBitAllocation.Allocate(ok, Widths, 5)).Message);
        Assert.Contains("layer 1", Assert.Throws<ArgumentException>(() =>
            KvQuantBitAllocation.Allocate([[3, 2, 1], [3, double.NaN, 1]], Widths, 3)).Message);
        Assert.Contains("layer 0", Assert.Throws<ArgumentException>(() => KvQuantBitAllocation.Allocate([[3, 2]], Widths, 3)).Message);
        Assert.Contains("ascending", Assert.Throws<ArgumentException>(() => KvQuantBitAllocation.Allocate(ok, [3, 2, 4], 3)).Message);
    }
}
