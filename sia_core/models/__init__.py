"""Pure ``nn.Module``s of SIA-WSSS: encoder, RFM, DAM, RSM, decoder, and the composed model."""
