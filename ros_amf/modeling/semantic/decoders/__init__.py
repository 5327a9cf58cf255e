"""One module per AFMA host network: FPN, DeepLabV3, U-Net, U-Net++, MA-Net, PAN, LinkNet, PSPNet."""
