namespace Kvq.Cuda.Tests;

/// <summary>DeviceArena on a device: aligned, disjoint slices of one allocation; an overflow gets its own.</summary>
public class DeviceArenaGpuTests
{
    [GpuFact]
    public void SlicesAreDisjointAndAlignedAndOverflowAllocates()
    {
        using var ctx = CudaContext.Create();
        using var arena = new DeviceArena(ctx, DeviceArena.SizeFor([100, 300]));
        var a = arena.Take(100);
        var b = arena.Take(300);
        Assert.Equal(256ul, b.Pointer - a.Pointer);
        Assert.Equal(768, arena.Used);
        a.CopyFrom(Enumerable.Repeat((byte)1, 100).ToArray());
        b.CopyFrom(Enumerable.Repeat((byte)2, 300).ToArray());
        Assert.All(a.Download<byte>(100), x => Assert.Equal(1, x));
        var c = arena.Take(4096);   // past the block: an allocation of its own
        Assert.True(arena.Bytes >= 768 + 4096);
        c.Fill(3);
        a.Dispose();                // a slice frees nothing
        Assert.All(b.Download<byte>(300), x => Assert.Equal(2, x));
    }
}
