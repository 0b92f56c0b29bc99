using System.Runtime.Intrinsics;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// The lane plans of the KVQuant register kernels: the paired-nibble code load (one zero-extending load and a shift
/// per register pair, session 12) against the general byte permute and variable shift on random code rows, and which
/// plans take it. The kernels that use them are
/// checked end to end against the scalar path in <see cref="NuqFusedKernelTests"/>.
/// </summary>
public class NuqLanesTests
{
    [Theory]
    [InlineData(64, 4, RopeStyle.Normal, true)]
    [InlineData(128, 4, RopeStyle.Normal, true)]
    [InlineData(64, 4, RopeStyle.Neox, false)]
    [InlineData(64, 3, RopeStyle.Normal, false)]
    [InlineData(64, 2, RopeStyle.Normal, false)]
    public void PairedNibblesAreThePairsOfNormalRopeAt4Bits(int d, int bits, RopeStyle style, bool paired)
    {
        if (!NuqLanes.IsSupported(d, bits)) return;   // the plans need AVX-512 VBMI
        Assert.Equal(paired, NuqLanes.RopeOrder(d, bits, style).PairedNibbles);
        Assert.False(NuqLanes.Natural(d, bits).PairedNibbles);
    }

    /// <summary>Random rows (seeds 1-40): each register's low 4 bits (all the codebook permute reads) equal the
    /// general path's.</summary>
    [Theory]
    [InlineData(64)]
    [InlineData(128)]
    public unsafe void PairedNibbleCodesEqualThePermutePath(int d)
    {
        if (!NuqLanes.IsSupported(d, 4)) return;
        var lanes = NuqLanes.RopeOrder(d, 4, RopeStyle.Normal);
        var row = new byte[64];
        for (int seed = 1; seed <= 40; seed++)
        {
            new Random(seed).NextBytes(row);
            fixed (byte* p = row)
            {
                var wide = lanes.LoadBytes == 64 ? Vector512.Load(p) : Vector256.Load(p).ToVector512Unsafe();
                for (int m = 0; m < lanes.Vectors / 2; m++)
                {
                    NuqLanes.PairedNibbleCodes(p + 16 * m, out var low, out var high);
                    var four = Vector512.Create(15);
                    Assert.Equal(NuqLanes.Codes(wide, lanes.Control[2 * m], lanes.Shift[2 * m]) & four, low & four);
                    Assert.Equal(NuqLanes.Codes(wide, lanes.Control[2 * m + 1], lanes.Shift[2 * m + 1]) & four, high & four);
                    for (int l = 0; l < 16; l++)
                    {
                        // And against the channel's code read bit by bit: lane l of register 2m (+1) is channel 32m + 2l (+1).
                        int c = 32 * m + 2 * l;
                        Assert.Equal(row[c / 2] & 15, low.GetElement(l) & 15);
                        Assert.Equal(row[(c + 1) / 2] >> 4, high.GetElement(l) & 15);
                    }
                }
            }
        }
    }
}
